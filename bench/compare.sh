#!/usr/bin/env bash
# Side-by-side throughput and latency of tollgate against its peers, in one run, with the same load:
#   (a) direct   the bench upstream (`tollgate bench upstream`, hyper, answers <Response/>)
#   (b) nginx    nginx proxy_pass -> the upstream, keepalive 64 (foreground, own prefix and pid file)
#   (c) tollgate tollgate serve: Twilio HMAC-SHA1 verify + dedupe + forward to the upstream,
#                with the SQLite store (fsync = "batch") and with the memory store
#   (d) express  one Node process: Express + the official twilio.webhook() middleware
#   (e) hop      `tollgate bench hop`: a bare proxy on tollgate's HTTP stack and threading that
#                verifies nothing, the floor under (c) (opt in: ONLY="... hop")
# Every request is a distinct, validly signed ~960-byte Twilio voice webhook, pre-signed by
# `tollgate bench load` for https://hooks.example.com/hooks/twilio; the same requests go to every target.
# Then open-loop runs at half of (a)'s peak rate, and at half of the slowest tollgate's peak, give
# the p99 latency tollgate adds over (a) at the same offered rate.
#
# Usage: bench/compare.sh            (from anywhere; needs cargo, nginx, node + npm)
# Knobs (environment): DURATION=10 (s per measured run)  WARMUP=2 (s)  CONNS=64  ROUNDS=3
#   REQUESTS=300000 (pre-signed per run; a run ends at DURATION or when all are sent)
#   LOADER_THREADS=2  UPSTREAM_THREADS=2  SKIP_BUILD=1 (use target/release/tollgate as is)
#   ONLY="direct nginx tollgate-sqlite tollgate-memory express" (subset; add hop for (e))  OUT=file (copy the report)
# Everything runs on 127.0.0.1 on free ports, every run is bounded in time, and every process the
# script starts is stopped (by pid) and its temp dir removed on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-300000}
LOADER_THREADS=${LOADER_THREADS:-2}
UPSTREAM_THREADS=${UPSTREAM_THREADS:-2}
ONLY=${ONLY:-"direct nginx tollgate-sqlite tollgate-memory express"}
TG="$ROOT/target/release/tollgate"
PUBLIC_HOST=hooks.example.com
PUBLIC_URL="https://$PUBLIC_HOST/hooks/twilio"
TICK=$(getconf CLK_TCK)

has() { [[ " $ONLY " == *" $1 "* ]]; }

# ---- build and install ---------------------------------------------------------------------
if [[ -z "${SKIP_BUILD:-}" ]]; then
    log "building tollgate (release)"
    (cd "$ROOT" && cargo build --release -q -p tollgate --bin tollgate)
fi
[[ -x "$TG" ]] || { log "no $TG"; exit 2; }
if has nginx; then command -v nginx >/dev/null || { log "nginx not found (apt-get install nginx-light)"; exit 2; }; fi
if has express; then
    command -v node >/dev/null || { log "node not found"; exit 2; }
    if [[ ! -d "$ROOT/bench/express/node_modules/twilio" ]]; then
        log "npm ci in bench/express"
        (cd "$ROOT/bench/express" && npm ci --no-audit --no-fund --loglevel=error >&2)
    fi
fi

# ---- temp dir, processes, cleanup ------------------------------------------------------------
bench_workdir tollgate-bench

export TOLLGATE_BENCH_TWILIO_TOKEN
TOLLGATE_BENCH_TWILIO_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

UP_PORT=$(free_port)
"$TG" bench upstream --listen "127.0.0.1:$UP_PORT" --threads "$UPSTREAM_THREADS" >"$WORK/upstream.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
wait_port "$UP_PORT"

# tollgate config for one store ("sqlite" or "memory").
tollgate_config() {
    local store=$1 port=$2 admin=$3 file="$WORK/tollgate-$1.toml"
    {
        cat <<EOF
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"
public_url = "https://$PUBLIC_HOST"
trusted_proxies = []
log_format = "json"
reload_poll_secs = 0

EOF
        if [[ $store == sqlite ]]; then
            printf '[state]\nbackend = "sqlite"\npath = "%s"\nfsync = "batch"\n\n' "$WORK/tollgate-$port.db"
        else
            printf '[state]\nbackend = "memory"\n\n'
        fi
        cat <<EOF
[[route]]
name = "twilio"
path = "/hooks/twilio"
provider = "twilio"
keys = [ { label = "bench", secret = "env:TOLLGATE_BENCH_TWILIO_TOKEN" } ]
upstream = "http://127.0.0.1:$UP_PORT"
dedupe_ttl_secs = 86400
EOF
    } >"$file"
    echo "$file"
}
SIGN_CONFIG=$(tollgate_config memory 1 2)

# start_<target> sets TARGET_PORT and SERVER_PIDS (the processes whose CPU and memory count).
start_direct() { TARGET_PORT=$UP_PORT; SERVER_PIDS=("$UP_PID"); }
start_nginx() {
    TARGET_PORT=$(free_port)
    mkdir -p "$WORK/nginx"
    sed -e "s#@WORK@#$WORK/nginx#g" -e "s#@PORT@#$TARGET_PORT#g" -e "s#@UPSTREAM_PORT@#$UP_PORT#g" \
        "$ROOT/bench/nginx.conf.template" >"$WORK/nginx/nginx.conf"
    nginx -p "$WORK/nginx" -e "$WORK/nginx/nginx-error.log" -c "$WORK/nginx/nginx.conf" &
    PIDS+=("$!")
    SERVER_PIDS=("$!")
    wait_port "$TARGET_PORT"
    sleep 0.2
    local w
    for w in $(pgrep -P "${SERVER_PIDS[0]}"); do SERVER_PIDS+=("$w"); done
}
start_tollgate() {
    TARGET_PORT=$(free_port)
    local cfg
    cfg=$(tollgate_config "$1" "$TARGET_PORT" "$(free_port)")
    "$TG" serve --config "$cfg" >>"$WORK/tollgate-$1.log" 2>&1 &
    PIDS+=("$!")
    SERVER_PIDS=("$!")
    wait_port "$TARGET_PORT"
}
start_hop() {
    TARGET_PORT=$(free_port)
    "$TG" bench hop --listen "127.0.0.1:$TARGET_PORT" --upstream "127.0.0.1:$UP_PORT" \
        >"$WORK/hop.log" 2>&1 &
    PIDS+=("$!")
    SERVER_PIDS=("$!")
    wait_port "$TARGET_PORT"
}
start_tollgate-sqlite() { start_tollgate sqlite; }
start_tollgate-memory() { start_tollgate memory; }
start_express() {
    TARGET_PORT=$(free_port)
    (cd "$ROOT/bench/express" && NODE_ENV=production PORT=$TARGET_PORT PUBLIC_HOST=$PUBLIC_HOST \
        TWILIO_AUTH_TOKEN=$TOLLGATE_BENCH_TWILIO_TOKEN exec node server.js) >"$WORK/express.log" 2>&1 &
    PIDS+=("$!")
    SERVER_PIDS=("$!")
    wait_port "$TARGET_PORT"
}

SEQ=0
load() { # label target-port extra-args...
    local label=$1 port=$2
    shift 2
    SEQ=$((SEQ + 1))
    "$TG" bench load --config "$SIGN_CONFIG" --route twilio --url "$PUBLIC_URL" \
        --target "http://127.0.0.1:$port" -c "$CONNS" --threads "$LOADER_THREADS" \
        --seed "$SEQ-$RANDOM$RANDOM" --label "$label" "$@"
}

RESULTS="$WORK/results.tsv"
printf 'round\tname\trate\trps\tp50\tp99\tp999\tanswered\tok\terrors\treplayed\tcpu_us\tup_cpu_us\trss_kb\thwm_kb\tlate\n' >"$RESULTS"

# measure <round> <name> [rate]: start, warm up, measure, record, stop.
measure() {
    local round=$1 name=$2 rate=${3:-} extra=() out c0 u0 c1 u1 line
    [[ -n $rate ]] && extra=(--rate "$rate")
    "start_$name"
    load "$name-warmup" "$TARGET_PORT" -d "$WARMUP" -n $((REQUESTS / 3)) "${extra[@]}" >"$WORK/warmup.out" 2>&1 ||
        { cat "$WORK/warmup.out" >&2; return 1; }
    out="$WORK/r$round-$name${rate:+-$rate}.out"
    # Pre-signing happens before the clock starts (the server idles meanwhile).
    c0=$(cpu_ticks "${SERVER_PIDS[@]}")
    u0=$(cpu_ticks "$UP_PID")
    load "$name" "$TARGET_PORT" -d "$DURATION" -n "$REQUESTS" "${extra[@]}" >"$out" 2>&1 ||
        { cat "$out" >&2; return 1; }
    c1=$(cpu_ticks "${SERVER_PIDS[@]}")
    u1=$(cpu_ticks "$UP_PID")
    local rss hwm
    rss=$(mem_kb VmRSS "${SERVER_PIDS[@]}")
    hwm=$(mem_kb VmHWM "${SERVER_PIDS[@]}")
    line=$(grep '^RESULT ' "$out") || { cat "$out" >&2; return 1; }
    grep -v '^RESULT ' "$out" | grep -v '^bench:' >&2 || true
    # key=value pairs of the RESULT line
    local rps p50 p99 p999 answered ok errors replayed late kv
    for kv in $line; do
        case $kv in
        rps=*) rps=${kv#*=} ;; p50_ms=*) p50=${kv#*=} ;; p99_ms=*) p99=${kv#*=} ;;
        p999_ms=*) p999=${kv#*=} ;; answered=*) answered=${kv#*=} ;; ok=*) ok=${kv#*=} ;;
        errors=*) errors=${kv#*=} ;; replayed=*) replayed=${kv#*=} ;; late=*) late=${kv#*=} ;;
        esac
    done
    local cpu up_cpu
    cpu=$(awk -v d=$((c1 - c0)) -v n="$answered" -v t="$TICK" 'BEGIN{printf "%.1f", n ? d * 1e6 / t / n : 0}')
    up_cpu=$(awk -v d=$((u1 - u0)) -v n="$answered" -v t="$TICK" 'BEGIN{printf "%.1f", n ? d * 1e6 / t / n : 0}')
    [[ $name == direct ]] && up_cpu=0
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "${rate:-max}" \
        "$rps" "$p50" "$p99" "$p999" "$answered" "$ok" "$errors" "$replayed" "$cpu" "$up_cpu" "$rss" "$hwm" "$late" >>"$RESULTS"
    if [[ $name != direct ]]; then stop "${SERVER_PIDS[0]}"; fi
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $LOAD_BEFORE; $(nproc) cores; $ROUNDS rounds of ${DURATION}s, $CONNS connections"
for round in $(seq 1 "$ROUNDS"); do
    for name in $ONLY; do
        log "round $round: $name"
        measure "$round" "$name"
    done
done

median_rps() { # name: median closed-loop rps over the rounds
    awk -F'\t' -v n="$1" '$2 == n && $3 == "max" {print $4}' "$RESULTS" | sort -n |
        awk '{a[NR] = $1} END {if (NR) printf "%d", a[int((NR + 1) / 2)]}'
}
# Half of (a)'s peak (median over the rounds), open loop, same connections.
if has direct; then
    HALF=$(($(median_rps direct) / 2))
    for round in $(seq 1 "$ROUNDS"); do
        for name in $ONLY; do
            [[ $name == express ]] && continue # it cannot reach this rate
            log "round $round: $name at $HALF rps"
            measure "$round" "$name" "$HALF"
        done
    done
fi
# Half of (a)'s peak may be more than tollgate sustains; then the added latency is queueing. So
# also compare at half of the slowest tollgate configuration's peak, a rate every target sustains.
LOW=0
for name in $ONLY; do
    [[ $name == tollgate-* ]] || continue
    m=$(median_rps "$name")
    if [[ -n $m ]] && ((LOW == 0 || m / 2 < LOW)); then LOW=$((m / 2)); fi
done
if has direct && [[ ${LOW:-0} -gt 0 && ${LOW} -lt ${HALF:-0} ]]; then
    for round in $(seq 1 "$ROUNDS"); do
        for name in $ONLY; do
            [[ $name == express ]] && continue
            log "round $round: $name at $LOW rps"
            measure "$round" "$name" "$LOW"
        done
    done
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

REPORT="$WORK/report.md"
node "$ROOT/bench/summarize.js" "$RESULTS" "$LOAD_BEFORE" "$LOAD_AFTER" "$DURATION" "$CONNS" "$ROUNDS" "${HALF:-}" >"$REPORT"
cat "$REPORT"
if [[ -n "${OUT:-}" ]]; then
    cp "$REPORT" "$OUT"
    cp "$RESULTS" "${OUT%.md}.tsv"
fi
