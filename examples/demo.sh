#!/usr/bin/env bash
# One command: tollgate on examples/tollgate.toml (SQLite state, no other service) in front of the
# demo app. The two keys below are published test fixtures, never real secrets.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p tollgate
export TOLLGATE_DEMO_SECRET="${TOLLGATE_DEMO_SECRET:-whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}"
export TOLLGATE_DEMO_APP_SECRET="${TOLLGATE_DEMO_APP_SECRET:-whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD}"
target/debug/tollgate demo-upstream &
upstream=$!
trap 'kill "$upstream" 2>/dev/null || true' EXIT
cat >&2 <<'HELP'
tollgate: 127.0.0.1:8080 (webhooks), 127.0.0.1:9090 (/metrics /healthz /readyz); demo app: 127.0.0.1:3000
In another shell, with the same two variables exported (see examples/demo.sh):
  target/debug/tollgate send --config examples/tollgate.toml --route demo --url http://127.0.0.1:8080/hooks/demo --count 3
  target/debug/tollgate send --config examples/tollgate.toml --route demo --url http://127.0.0.1:8080/hooks/demo --count 3 --tamper body
HELP
target/debug/tollgate serve --config examples/tollgate.toml
