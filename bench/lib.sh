# shellcheck shell=bash
# Helpers shared by the bench scripts (compare.sh, queue.sh): logging, the temp dir with the
# started processes and their cleanup, free loopback ports, a private redis-server, CPU and memory
# of processes. Source it after ROOT is set:
#   source "$ROOT/bench/lib.sh"
# Defines functions only; `bench_workdir` sets WORK, PIDS and the exit traps.

log() { printf '%s\n' "$*" >&2; }

# bench_workdir <prefix>: a fresh temp dir /tmp/<prefix>.XXXXXX in WORK, an empty PIDS, and traps
# that stop every pid in PIDS and remove WORK on exit (INT and TERM exit 130).
bench_workdir() {
    WORK=$(mktemp -d "/tmp/$1.XXXXXX")
    PIDS=()
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}

# A free loopback port (not listening now; the kernel's ephemeral range is avoided).
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        if ! ss -Htln "sport = :$p" | grep -q .; then echo "$p"; return; fi
    done
}

# Waits (bounded: 100 tries, 0.1 s apart) until something listens on 127.0.0.1:<port>.
wait_port() {
    local i
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "nothing listening on port $1"; return 1
}

# Stops one process we started and forgets it.
stop() {
    local p=$1 q keep=()
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    for q in "${PIDS[@]}"; do [[ "$q" == "$p" ]] || keep+=("$q"); done
    PIDS=("${keep[@]}")
}

# utime + stime (clock ticks) summed over the given pids.
cpu_ticks() {
    local t=0 p v
    for p in "$@"; do
        v=$(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')
        t=$((t + v))
    done
    echo "$t"
}

# kB of a /proc/<pid>/status field (VmRSS, VmHWM) summed over the given pids.
mem_kb() {
    local field=$1 t=0 p v
    shift
    for p in "$@"; do
        v=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/status")
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

# start_redis <dir>: a redis-server of our own on a free loopback port (never the machine's
# shared one on 6379), with files in <dir>, added to PIDS; sets REDIS_PORT and REDIS_PID.
# Persistence is the AOF with `appendfsync everysec` (Redis's usual durable setting: a write is
# in the AOF before Redis answers and fsynced within a second, like SQLite's fsync = "batch"),
# and no RDB snapshots.
start_redis() {
    mkdir -p "$1"
    REDIS_PORT=$(free_port)
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$1" --save '' \
        --appendonly yes --appendfsync everysec --protected-mode yes \
        --logfile "$1/redis.log" --daemonize no >/dev/null 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_port "$REDIS_PORT"
}
