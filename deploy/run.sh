#!/usr/bin/env bash
# Run the three services (each with its Kafka consumers and outbox relay) until Ctrl-C.
# Used by `make run`; expects Kafka up, topics created and migrations applied (the Makefile does that).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
UV="${UV:-$(deploy/uv.sh)}"
mkdir -p .data
if [[ -z "${CLIENTELA_ADMIN_TOKEN:-}" ]]; then
  [[ -s .data/admin-token ]] || python3 -c 'import secrets; print(secrets.token_urlsafe(24))' > .data/admin-token
  CLIENTELA_ADMIN_TOKEN="$(cat .data/admin-token)"
  export CLIENTELA_ADMIN_TOKEN
  echo "run: admin token in .data/admin-token (set CLIENTELA_ADMIN_TOKEN to choose your own)"
fi
pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "run: stopping services"
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT
PYTHON="$("$UV" run --no-sync python -c 'import sys; print(sys.executable)')"
for service in ingest profile segmentation; do
  # Process substitution, not a pipe: $! must be the service itself so that `stop` reaches it.
  "$PYTHON" -m "services.$service" > >(sed -u "s/^/[$service] /") 2>&1 &
  pids+=($!)
done
echo "run: ingest http://127.0.0.1:${INGEST_PORT:-8001}/docs  profile http://127.0.0.1:${PROFILE_PORT:-8002}/docs  segmentation http://127.0.0.1:${SEGMENTATION_PORT:-8003}/docs"
echo "run: Ctrl-C stops the services (Kafka keeps running: make kafka-down)"
wait
