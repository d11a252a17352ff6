#!/usr/bin/env bash
# Validate Kubernetes manifests against the API's own Go types, strictly (deploy/k8scheck): an unknown or
# misspelt field, a wrong type or a duplicate key fails, as the API server's field validation would.
#   deploy/k8s-check.sh                every resource listed in deploy/k8s/kustomization.yaml
#   deploy/k8s-check.sh FILE...        these files
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="$("$HERE/go-tool.sh" k8scheck)"
if (($# == 0)); then
  # The kustomization's `resources:` list (one file name per line, indented by two spaces and a dash).
  mapfile -t files < <(sed -n '/^resources:/,/^[^ ]/s/^  - \(.*\.yaml\)$/\1/p' "$HERE/k8s/kustomization.yaml")
  (( ${#files[@]} > 0 )) || { echo "k8s-check: no resources in deploy/k8s/kustomization.yaml" >&2; exit 1; }
  set -- "${files[@]/#/$HERE/k8s/}"
fi
exec "$BIN" "$@"
