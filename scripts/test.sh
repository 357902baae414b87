#!/usr/bin/env bash
# The whole test suite: every crate's unit, vector, registry, conformance, fault and integration
# tests, then the interop suite against the providers' official SDKs (which installs its own
# Python virtualenv and node_modules on first run). OS packages it needs (redis-server, Node,
# Python venv) are installed first by scripts/deps.sh when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo test --workspace --locked </dev/null
bash interop/run.sh
