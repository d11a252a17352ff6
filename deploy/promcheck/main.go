// promcheck validates Prometheus rule files the way `promtool check rules` does, with Prometheus's own rule
// loader (YAML fields, PromQL of every expression, label and annotation templates, unique alert names),
// without building promtool itself (which pulls in every service discovery and cloud SDK: too slow for CI).
// Usage: go run . FILE...   (deploy/rules-check.sh builds it once and caches the binary)
package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: promcheck RULE_FILE...")
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{})
	logger := slog.New(slog.DiscardHandler)
	failed := false
	for _, path := range os.Args[1:] {
		groups, errs := rulefmt.ParseFile(path, false, model.LegacyValidation, p, logger)
		for _, err := range errs {
			fmt.Fprintln(os.Stderr, err)
			failed = true
		}
		if groups == nil {
			continue
		}
		seen := map[string]string{}
		rules := 0
		for _, group := range groups.Groups {
			for _, rule := range group.Rules {
				rules++
				if rule.Alert == "" {
					continue
				}
				if other, ok := seen[rule.Alert]; ok {
					fmt.Fprintf(os.Stderr, "%s: alert %s is defined twice (groups %s and %s)\n", path, rule.Alert, other, group.Name)
					failed = true
				}
				seen[rule.Alert] = group.Name
			}
		}
		fmt.Printf("%s: %d rules in %d groups\n", path, rules, len(groups.Groups))
	}
	if failed {
		os.Exit(1)
	}
}
