#!/usr/bin/env bash
# Print the path of a usable `uv`, installing a pinned copy into the cache when none is on PATH.
# Only Python 3.11 is needed: uv comes from PyPI into its own virtualenv outside the repository.
set -euo pipefail
UV_VERSION="0.13.9"
CACHE="${CLIENTELA_CACHE:-$HOME/.cache/clientela}"
if command -v uv >/dev/null 2>&1; then command -v uv; exit 0; fi
TOOLS="$CACHE/tools"
if [[ ! -x "$TOOLS/bin/uv" ]]; then
  echo "uv: installing uv $UV_VERSION into $TOOLS" >&2
  python3 -m venv "$TOOLS" >&2
  "$TOOLS/bin/python" -m pip install -q "uv==$UV_VERSION" >&2
fi
echo "$TOOLS/bin/uv"
