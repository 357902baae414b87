#!/usr/bin/env bash
# Queue-mode throughput, side by side in one run: durable acknowledgements per second of a
# `mode = "queue"` route on SQLite (`fsync = "batch"`), how long after the load the queue has
# drained into the app, and, as references under the same load, the same tollgate in proxy mode
# (SQLite store) and nginx proxy_pass to the same app. With OLD=<binary> every tollgate target is
# also run with that binary, alternating, so a change is measured against its predecessor.
#
# The app is `tollgate bench upstream`; the load is `tollgate bench load` (distinct, validly signed
# Twilio form webhooks, CONNS keep-alive connections, closed loop).
#
# Usage: bench/queue.sh   (from anywhere; builds target/release/tollgate unless SKIP_BUILD=1)
# Knobs (environment): DURATION=8 (s per measured run)  CONNS=64  ROUNDS=1  REQUESTS=400000
#   OLD=/path/to/old/tollgate  NEW=target/release/tollgate
#   ONLY="queue-sqlite queue-redis proxy-sqlite nginx" (also: queue-memory, queue-sqlite-always)
# queue-redis starts a redis-server of its own per run (free port, AOF with appendfsync everysec,
# no RDB snapshots; see start_redis in bench/lib.sh) and counts its CPU with tollgate's.
# Run it under `flock /tmp/tollgate-bench.lock bench/queue.sh` on a shared machine.
# Everything runs on 127.0.0.1 on free ports, every run is bounded in time, and every process the
# script starts is stopped (by pid) and its temp dir removed on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
DURATION=${DURATION:-8}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-1}
REQUESTS=${REQUESTS:-400000}
ONLY=${ONLY:-"queue-sqlite queue-redis proxy-sqlite nginx"}
NEW=${NEW:-$ROOT/target/release/tollgate}
OLD=${OLD:-}
DRAIN_LIMIT=${DRAIN_LIMIT:-30}
PUBLIC_HOST=hooks.example.com
PUBLIC_URL="https://$PUBLIC_HOST/hooks/twilio"

if [[ -z "${SKIP_BUILD:-}" ]]; then
    log "building tollgate (release)"
    (cd "$ROOT" && cargo build --release -q -p tollgate --bin tollgate)
fi
for b in "$NEW" ${OLD:+"$OLD"}; do [[ -x "$b" ]] || { log "no $b"; exit 2; }; done

bench_workdir tollgate-qbench

export TOLLGATE_BENCH_TWILIO_TOKEN TOLLGATE_BENCH_APP_SECRET
TOLLGATE_BENCH_TWILIO_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
TOLLGATE_BENCH_APP_SECRET=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')

UP_PORT=$(free_port)
"$NEW" bench upstream --listen "127.0.0.1:$UP_PORT" --threads 2 >"$WORK/upstream.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
wait_port "$UP_PORT"

# config <mode> <state> <fsync> <port> <admin> -> path
config() {
    local mode=$1 state=$2 fsync=$3 port=$4 admin=$5 file="$WORK/tg-$4.toml"
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
        if [[ $state == sqlite ]]; then
            printf '[state]\nbackend = "sqlite"\npath = "%s"\nfsync = "%s"\n\n' "$WORK/tg-$port.db" "$fsync"
        elif [[ $state == redis ]]; then
            printf '[state]\nbackend = "redis"\nurl = "redis://127.0.0.1:%s/0"\n\n' "$REDIS_PORT"
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
        if [[ $mode == queue ]]; then
            cat <<EOF
mode = "queue"
app_secret = "env:TOLLGATE_BENCH_APP_SECRET"
response = { status = 200, content_type = "text/xml", body = "<Response/>" }
concurrency = 64
EOF
        fi
    } >"$file"
    echo "$file"
}
SIGN_CONFIG=$(config proxy memory batch 1 2)

# start <binary> <mode> <state> <fsync>: sets TARGET_PORT, ADMIN_PORT, SERVER_PID.
start_tollgate() {
    TARGET_PORT=$(free_port)
    ADMIN_PORT=$(free_port)
    local cfg
    cfg=$(config "$2" "$3" "$4" "$TARGET_PORT" "$ADMIN_PORT")
    "$1" serve --config "$cfg" >>"$WORK/tollgate-$TARGET_PORT.log" 2>&1 &
    PIDS+=("$!")
    SERVER_PID=$!
    wait_port "$TARGET_PORT"
}
start_nginx() {
    TARGET_PORT=$(free_port)
    mkdir -p "$WORK/nginx"
    sed -e "s#@WORK@#$WORK/nginx#g" -e "s#@PORT@#$TARGET_PORT#g" -e "s#@UPSTREAM_PORT@#$UP_PORT#g" \
        "$ROOT/bench/nginx.conf.template" >"$WORK/nginx/nginx.conf"
    nginx -p "$WORK/nginx" -e "$WORK/nginx/nginx-error.log" -c "$WORK/nginx/nginx.conf" &
    PIDS+=("$!")
    SERVER_PID=$!
    wait_port "$TARGET_PORT"
}

# A counter's value summed over its label sets, from the admin listener's /metrics.
metric() { # name label-filter
    curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" 2>/dev/null |
        awk -v n="$1" -v f="$2" 'index($0, n) == 1 && index($0, f) {s += $NF} END {printf "%d", s}'
}

SEQ=0
TICK=$(getconf CLK_TCK)
printf 'round\tbinary\ttarget\tacks_per_s\tp99_ms\tanswered\tok\tnon2xx\tdrained_after_s\tcpu_us_per_event\tpeak_rss_kb\n' >"$WORK/results.tsv"
measure() { # round binary-label binary target
    local round=$1 blabel=$2 bin=$3 target=$4 out line kv rps p99 answered ok non2xx drained=-
    case $target in
    queue-sqlite) start_tollgate "$bin" queue sqlite batch ;;
    queue-sqlite-always) start_tollgate "$bin" queue sqlite always ;;
    queue-memory) start_tollgate "$bin" queue memory batch ;;
    queue-redis)
        start_redis "$WORK/redis-r$round-$blabel"
        start_tollgate "$bin" queue redis batch
        ;;
    proxy-sqlite) start_tollgate "$bin" proxy sqlite batch ;;
    nginx) start_nginx ;;
    esac
    SEQ=$((SEQ + 1))
    out="$WORK/r$round-$blabel-$target.out"
    local c0 cpu=- hwm=- cpu_pids=("$SERVER_PID")
    if [[ $target == queue-redis ]]; then cpu_pids+=("$REDIS_PID"); fi
    c0=$(cpu_ticks "${cpu_pids[@]}")
    "$NEW" bench load --config "$SIGN_CONFIG" --route twilio --url "$PUBLIC_URL" \
        --target "http://127.0.0.1:$TARGET_PORT" -c "$CONNS" --threads 2 -d "$DURATION" \
        -n "$REQUESTS" --seed "q$SEQ-$RANDOM$RANDOM" --label "$blabel-$target" >"$out" 2>&1 ||
        { cat "$out" >&2; return 1; }
    local t_end
    t_end=$(date +%s.%N)
    line=$(grep '^RESULT ' "$out") || { cat "$out" >&2; return 1; }
    for kv in $line; do
        case $kv in
        rps=*) rps=${kv#*=} ;; p99_ms=*) p99=${kv#*=} ;; answered=*) answered=${kv#*=} ;;
        ok=*) ok=${kv#*=} ;; non2xx=*) non2xx=${kv#*=} ;;
        esac
    done
    if [[ $target == queue-* ]]; then
        # Drained: every event stored as new has been delivered (metrics count live).
        local new delivered
        while :; do
            new=$(metric tollgate_enqueued_total 'result="new"')
            delivered=$(metric tollgate_delivery_attempts_total 'outcome="delivered"')
            if [[ $new -gt 0 && $delivered -ge $new ]]; then
                drained=$(awk -v a="$t_end" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')
                break
            fi
            if awk -v a="$t_end" -v b="$(date +%s.%N)" -v l="$DRAIN_LIMIT" 'BEGIN{exit !(b - a > l)}'; then
                drained="not-after-${DRAIN_LIMIT}s($delivered/$new)"
                break
            fi
            sleep 0.1
        done
    fi
    # tollgate's CPU (with queue-redis, plus redis-server's) from the load's start until the queue
    # drained (acceptance and delivery), per answer; nginx's work is in its worker processes, not
    # measured here.
    if [[ $target != nginx ]]; then
        cpu=$(awk -v d=$(($(cpu_ticks "${cpu_pids[@]}") - c0)) -v n="$answered" -v t="$TICK" \
            'BEGIN{printf "%.1f", n ? d * 1e6 / t / n : 0}')
        hwm=$(mem_kb VmHWM "$SERVER_PID")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$blabel" "$target" "$rps" "$p99" \
        "$answered" "$ok" "$non2xx" "$drained" "$cpu" "$hwm" >>"$WORK/results.tsv"
    log "$(tail -1 "$WORK/results.tsv")"
    stop "$SERVER_PID"
    if [[ $target == queue-redis ]]; then stop "$REDIS_PID"; fi
}

log "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; $ROUNDS round(s) of ${DURATION}s, $CONNS connections"
for round in $(seq 1 "$ROUNDS"); do
    for target in $ONLY; do
        if [[ $target == nginx ]]; then
            measure "$round" ref nginx nginx
            continue
        fi
        measure "$round" new "$NEW" "$target"
        if [[ -n $OLD ]]; then measure "$round" old "$OLD" "$target"; fi
    done
done
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
column -t -s $'\t' "$WORK/results.tsv"
if [[ -n "${OUT:-}" ]]; then cp "$WORK/results.tsv" "$OUT"; fi
