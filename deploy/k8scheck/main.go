// k8scheck decodes Kubernetes manifests strictly into the API's own Go types (k8s.io/api), the way the API
// server's strict field validation does: an unknown or misspelt field, a wrong type or a duplicate key is an
// error, as `kubectl apply` would report it. It knows the kinds deploy/k8s uses.
// Usage: k8scheck FILE...   (deploy/k8s-check.sh builds it once and caches the binary)
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

func newObject(t typeMeta) (any, error) {
	switch t.APIVersion + "/" + t.Kind {
	case "v1/Namespace":
		return &corev1.Namespace{}, nil
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1/Secret":
		return &corev1.Secret{}, nil
	case "v1/Service":
		return &corev1.Service{}, nil
	case "v1/PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}, nil
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, nil
	case "batch/v1/Job":
		return &batchv1.Job{}, nil
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	}
	return nil, fmt.Errorf("unknown kind %s %s", t.APIVersion, t.Kind)
}

func check(path string) (int, []error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, []error{err}
	}
	reader := utilyaml.NewYAMLReader(bufioReader(data))
	var errs []error
	count := 0
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return count, errs
		}
		if err != nil {
			return count, append(errs, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		count++
		var t typeMeta
		if err := yaml.Unmarshal(doc, &t); err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", count, err))
			continue
		}
		obj, err := newObject(t)
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", count, err))
			continue
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			errs = append(errs, fmt.Errorf("document %d (%s): %w", count, t.Kind, err))
		}
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: k8scheck MANIFEST...")
		os.Exit(2)
	}
	failed := false
	for _, path := range os.Args[1:] {
		n, errs := check(path)
		for _, err := range errs {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failed = true
		}
		fmt.Printf("%s: %d objects\n", path, n)
	}
	if failed {
		os.Exit(1)
	}
}
