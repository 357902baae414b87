#!/usr/bin/env bash
# tollgate interop suite: official provider SDKs <-> `tollgate verify` / `tollgate sign`.
# Run from anywhere: `bash interop/run.sh`. Installs its own Python venv and node modules (idempotent,
# keyed on the hash of requirements.txt / package-lock.json), builds the CLI once, then runs interop.py.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
cd "$ROOT"

PY="${PYTHON:-python3}"
venv_key="$( (cat "$HERE/requirements.txt"; "$PY" --version) | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$HERE/.venv/.interop-stamp" 2>/dev/null || true)" != "$venv_key" ]; then
  echo "interop: installing Python SDKs into interop/.venv" >&2
  rm -rf "$HERE/.venv"
  "$PY" -m venv "$HERE/.venv"
  "$HERE/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/requirements.txt" </dev/null
  echo "$venv_key" > "$HERE/.venv/.interop-stamp"
fi

node_key="$( (cat "$HERE/package-lock.json"; node --version) | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$HERE/node_modules/.interop-stamp" 2>/dev/null || true)" != "$node_key" ]; then
  echo "interop: installing node SDKs into interop/node_modules" >&2
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error </dev/null)
  echo "$node_key" > "$HERE/node_modules/.interop-stamp"
fi

if [ "${INTEROP_SELFTEST:-0}" != "1" ]; then
  cargo build --quiet -p tollgate </dev/null
fi
# Phase 1 (interop.py): SDKs <-> `tollgate verify` / `tollgate sign`. Phase 2 (gateway_e2e.py): SDK-signed requests
# through `tollgate serve` to a recording upstream; it prints the final `interop: N passed, M failed` for both.
counts="$(mktemp)"
trap 'rm -f "$counts"' EXIT
cli_rc=0
INTEROP_COUNTS_FILE="$counts" "$HERE/.venv/bin/python" "$HERE/interop.py" "$@" </dev/null || cli_rc=$?
e2e_rc=0
INTEROP_COUNTS_FILE="$counts" "$HERE/.venv/bin/python" "$HERE/gateway_e2e.py" </dev/null || e2e_rc=$?
[ "$cli_rc" -eq 0 ] && [ "$e2e_rc" -eq 0 ]
