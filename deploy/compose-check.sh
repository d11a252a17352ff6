#!/usr/bin/env bash
# Validate deploy/docker-compose.yml with the real Docker Compose, without a Docker engine.
#   deploy/compose-check.sh                 `docker compose config -q`, with and without the observability profile
#   deploy/compose-check.sh ARGS...         `docker compose -f deploy/docker-compose.yml ARGS...` (e.g. config --format json)
#   deploy/compose-check.sh --plugin-dir    print the DOCKER_CONFIG folder holding the compose plugin
# Compose is the pinned release built once from the Go module proxy (about 2-3 minutes on 2 cores) and
# cached as a docker CLI plugin under $CLIENTELA_CACHE/tools (like deploy/uv.sh's uv); later runs take a
# second. Without the docker CLI the plugin binary runs alone (it is also a standalone `docker-compose`).
# Required variables that are not set get obviously fake values and deploy/.env is not read: this checks
# the file, not a machine's secrets. Needs Go >= the version compose's go.mod asks for (1.26.8; GOTOOLCHAIN
# is left as it is).
set -euo pipefail

COMPOSE_VERSION="v5.6.0"
MODULE="github.com/docker/compose/v5"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
COMPOSE_FILE="$HERE/docker-compose.yml"
CACHE="${CLIENTELA_CACHE:-$HOME/.cache/clientela}"
TOOLS="$CACHE/tools"
PLUGIN_DIR="$TOOLS/compose-$COMPOSE_VERSION"   # a DOCKER_CONFIG folder: cli-plugins/docker-compose
PLUGIN="$PLUGIN_DIR/cli-plugins/docker-compose"

log() { echo "compose-check: $*" >&2; }

build() {
  command -v go >/dev/null || { log "Go is required to build Docker Compose $COMPOSE_VERSION"; exit 1; }
  mkdir -p "$TOOLS"
  # One build at a time (parallel test runs); the one that waited finds the binary there.
  exec 9>"$TOOLS/compose-$COMPOSE_VERSION.lock"
  flock 9
  [[ -x "$PLUGIN" ]] && return
  local work started
  work="$(mktemp -d "$TOOLS/compose-build.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT
  started=$SECONDS
  log "building Docker Compose $COMPOSE_VERSION from the Go module proxy (cached in $PLUGIN_DIR)"
  export GOMODCACHE="$work/mod" GOCACHE="$work/build" GOFLAGS="-modcacherw" CGO_ENABLED=0 GOPATH="$work/gopath"
  # `go install module@version` refuses modules with exclude directives (compose has some): build the
  # downloaded module as the main module instead, as its own Makefile does.
  local dir
  dir="$(cd "$work" && go mod download -json "$MODULE@$COMPOSE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -n "$dir" && -f "$dir/go.mod" ]] || { log "could not download $MODULE@$COMPOSE_VERSION"; exit 1; }
  cp -R "$dir" "$work/src"
  chmod -R u+w "$work/src"
  (cd "$work/src" && go build -trimpath \
    -ldflags "-s -w -X $MODULE/internal.Version=$COMPOSE_VERSION" -o "$work/docker-compose" ./cmd)
  mkdir -p "$PLUGIN_DIR/cli-plugins"
  mv "$work/docker-compose" "$PLUGIN.tmp" && mv "$PLUGIN.tmp" "$PLUGIN"
  log "built in $((SECONDS - started)) s"
  rm -rf "$work"
  trap - EXIT
}

compose() {
  # Placeholders for the variables the file requires (${VAR:?}) unless they are set (set and empty, the
  # file must refuse them); --env-file /dev/null: deploy/.env is not read.
  local var
  for var in CLIENTELA_SECRET_KEY CLIENTELA_ADMIN_TOKEN CLIENTELA_PG_PASSWORD CLIENTELA_PG_ADMIN_PASSWORD \
    GRAFANA_ADMIN_PASSWORD; do
    [[ -v "$var" ]] || export "$var=compose-check-placeholder-not-a-secret-0123456789"
  done
  if command -v docker >/dev/null; then
    DOCKER_CONFIG="$PLUGIN_DIR" docker compose --env-file /dev/null -f "$COMPOSE_FILE" "$@"
  else
    "$PLUGIN" --env-file /dev/null -f "$COMPOSE_FILE" "$@"
  fi
}

[[ -x "$PLUGIN" ]] || build

case "${1:-}" in
  "")
    compose config -q
    compose --profile observability config -q
    log "deploy/docker-compose.yml is valid (Docker Compose $COMPOSE_VERSION)"
    ;;
  --plugin-dir) echo "$PLUGIN_DIR" ;;
  *) compose "$@" ;;
esac
