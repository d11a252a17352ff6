#!/usr/bin/env bash
# Validate Prometheus rule files with Prometheus's own rule loader (deploy/promcheck does what
# `promtool check rules` does, without building promtool, whose service discoveries and cloud SDKs take over
# 10 minutes to compile on 2 cores).
#   deploy/rules-check.sh              check deploy/prometheus/alerts.yml
#   deploy/rules-check.sh FILE...      check these files
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="$("$HERE/go-tool.sh" promcheck)"
if (($# == 0)); then set -- "$HERE/prometheus/alerts.yml"; fi
exec "$BIN" "$@"
