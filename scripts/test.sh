#!/usr/bin/env bash
# The whole test suite: every crate's unit, vector, registry, conformance, fault and integration
# tests, then the interop suite against the providers' official SDKs (which installs its own
# Python virtualenv and node_modules on first run). Needs: cargo, python3, node/npm, redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked </dev/null
bash interop/run.sh
