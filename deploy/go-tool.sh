#!/usr/bin/env bash
# Print the path of the binary of one of the small Go checkers in deploy/ (promcheck, k8scheck), building it
# first when needed: from the Go module proxy, with its go.sum, into $CLIENTELA_CACHE/tools/<name>-<hash of
# its sources>/ (about a minute the first time; then nothing to do). Used by rules-check.sh, k8s-check.sh.
#   deploy/go-tool.sh promcheck
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NAME="${1:?usage: go-tool.sh promcheck|k8scheck}"
SRC="$HERE/$NAME"
[[ -f "$SRC/go.mod" ]] || { echo "go-tool: no Go module in $SRC" >&2; exit 2; }
CACHE="${CLIENTELA_CACHE:-$HOME/.cache/clientela}"
TOOLS="$CACHE/tools"
KEY="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC"/*.go | sha256sum | cut -c1-12)"
BIN="$TOOLS/$NAME-$KEY/$NAME"

log() { echo "go-tool: $*" >&2; }

build() {
  command -v go >/dev/null || { log "Go is required to build deploy/$NAME"; exit 1; }
  mkdir -p "$TOOLS"
  exec 9>"$TOOLS/$NAME.lock"
  flock 9  # one build at a time; the one that waited finds the binary there
  [[ -x "$BIN" ]] && return
  local work started
  work="$(mktemp -d "$TOOLS/$NAME-build.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT
  started=$SECONDS
  log "building deploy/$NAME (cached in $(dirname "$BIN"))"
  # Built from a copy, so that nothing is written into the repository.
  cp "$SRC/go.mod" "$SRC/go.sum" "$SRC"/*.go "$work/"
  (cd "$work" && GOMODCACHE="$work/mod" GOCACHE="$work/build" GOPATH="$work/gopath" \
    GOFLAGS="-modcacherw -mod=readonly" CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/$NAME" .)
  mkdir -p "$(dirname "$BIN")"
  mv "$work/$NAME" "$BIN"
  log "built in $((SECONDS - started)) s"
  rm -rf "$work"
  trap - EXIT
}

[[ -x "$BIN" ]] || build
echo "$BIN"
