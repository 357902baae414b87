#!/usr/bin/env bash
# User-space instructions a proxied request costs tollgate, counted by callgrind: unlike requests
# per second, the count does not move with whatever else the machine runs, so a change to the hot
# path can be judged on a shared machine from one run (old vs new: same inputs, same count).
# It does not see the kernel (socket work, wake-ups, fsync) or the cache, and valgrind runs
# SHA-1/SHA-256 in their portable code rather than with SHA-NI: use it beside bench/compare.sh,
# not instead of it.
#
# Usage: bench/instructions.sh [BINARY...]   (default target/release/tollgate; builds it unless
#        SKIP_BUILD=1). Each binary serves one Twilio route (1 serving thread) under valgrind;
#        the load tool sends WARM requests, the counters are zeroed, REQUESTS more are sent, and
#        the instructions of that window are divided by REQUESTS.
# Knobs: STORES="memory sqlite"  REQUESTS=3000  WARM=2000  TOP=0 (also list the TOP functions
#        with the most instructions of their own)  KEEP=DIR (copy each callgrind dump there)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
STORES=${STORES:-"memory sqlite"}
REQUESTS=${REQUESTS:-3000}
WARM=${WARM:-2000}
TOP=${TOP:-0}
BINS=("$@")
[[ ${#BINS[@]} -gt 0 ]] || BINS=("$ROOT/target/release/tollgate")

command -v valgrind >/dev/null || { log "needs valgrind (apt-get install valgrind)"; exit 2; }
if [[ -z "${SKIP_BUILD:-}" && $# -eq 0 ]]; then
    log "building tollgate (release)"
    (cd "$ROOT" && cargo build --release -q -p tollgate --bin tollgate)
fi
TG=${BINS[0]}

bench_workdir tollgate-instr
export TOLLGATE_BENCH_TWILIO_TOKEN
TOLLGATE_BENCH_TWILIO_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

UP_PORT=$(free_port)
"$TG" bench upstream --listen "127.0.0.1:$UP_PORT" --threads 1 >"$WORK/upstream.log" 2>&1 &
PIDS+=("$!")
wait_port "$UP_PORT"

# config <store> <port> <admin> -> path
config() {
    local file="$WORK/tg-$2.toml"
    {
        printf '[server]\nlisten = "127.0.0.1:%s"\nadmin_listen = "127.0.0.1:%s"\n' "$2" "$3"
        printf 'public_url = "https://hooks.example.com"\nreload_poll_secs = 0\nworkers = 1\n\n'
        if [[ $1 == sqlite ]]; then
            printf '[state]\nbackend = "sqlite"\npath = "%s"\nfsync = "batch"\n\n' "$WORK/tg-$2.db"
        else
            printf '[state]\nbackend = "memory"\n\n'
        fi
        printf '[[route]]\nname = "twilio"\npath = "/hooks/twilio"\nprovider = "twilio"\n'
        printf 'keys = [ { label = "bench", secret = "env:TOLLGATE_BENCH_TWILIO_TOKEN" } ]\n'
        printf 'upstream = "http://127.0.0.1:%s"\ndedupe_ttl_secs = 86400\n' "$UP_PORT"
    } >"$file"
    echo "$file"
}

load() { # port count
    "$TG" bench load --config "$SIGN" --route twilio --url https://hooks.example.com/hooks/twilio \
        --target "http://127.0.0.1:$1" -c 8 --threads 1 -n "$2" -d 300 --seed "$RANDOM$RANDOM" \
        --label instr >"$WORK/load.out" 2>&1 || { cat "$WORK/load.out" >&2; return 1; }
    grep -q " errors=0 " "$WORK/load.out" && grep -q " non2xx=0 " "$WORK/load.out" ||
        { log "requests failed:"; grep '^RESULT' "$WORK/load.out" >&2; return 1; }
}

SIGN=$(config memory 1 2)
printf '| binary | store | instructions a request |\n|---|---|---:|\n'
for bin in "${BINS[@]}"; do
    for store in $STORES; do
        port=$(free_port)
        admin=$(free_port)
        cfg=$(config "$store" "$port" "$admin")
        out="$WORK/cg.$port"
        valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$bin" serve --config "$cfg" \
            >"$WORK/serve-$port.log" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        # valgrind starts slowly; bounded wait for readiness (up to 60 s).
        for _ in $(seq 1 300); do
            curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break
            sleep 0.2
        done
        load "$port" "$WARM"
        callgrind_control -z "$pid" >/dev/null 2>&1
        load "$port" "$REQUESTS"
        callgrind_control -d "$pid" >/dev/null 2>&1
        dump=$(ls "$out.$pid".* 2>/dev/null | head -1)
        total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
        printf '| %s | %s | %d |\n' "$bin" "$store" $((total / REQUESTS))
        [[ -n ${KEEP:-} ]] && mkdir -p "$KEEP" && cp "$dump" "$KEEP/$(basename "$bin").$store.callgrind"
        if [[ $TOP -gt 0 ]]; then
            python3 "$ROOT/bench/callgrind_self.py" "$dump" "$REQUESTS" "$TOP" | sed 's/^/    /'
        fi
        stop "$pid"
    done
done
