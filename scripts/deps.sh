#!/usr/bin/env bash
# What the test suite needs from the OS besides Rust: redis-server (the Redis backend tests start
# their own on a free port), Node + npm and Python's venv (the interop tests install the official
# SDKs into interop/node_modules and interop/.venv). Installs whatever is missing with apt when it
# can (root, or sudo without a password); otherwise names the packages and fails.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "tests need: ${need[*]} (install them, e.g. apt-get install ${need[*]})" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "tests need: ${need[*]} (no apt-get here: install them with your package manager)" >&2
  exit 1
fi
echo "installing ${need[*]}" >&2
"${as_root[@]}" apt-get update -qq </dev/null
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" </dev/null
