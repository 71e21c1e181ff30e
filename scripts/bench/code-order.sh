#!/usr/bin/env bash
# code-order.sh — regenerates crates/ranvier/code-order.txt, the symbol ordering file with
# which the linker puts every function that the benchmark scenarios run first in the
# `ranvier` binary's code, together (see crates/ranvier/build.rs for why).
#
# 1. Builds the release binary, then runs it under callgrind through every ranvier-bench
#    scenario, once on SQLite and once on PostgreSQL, with a profile dump after start-up and
#    after each scenario, and lists each function of the binary that ran: the code both runs
#    ran, then SQLite's own, then PostgreSQL's own, each part by the phase that first ran it
#    (start-up, then the scenarios in the benchmark's order), then by cost. The code the
#    server has not run yet, and the other database's, stays out of memory.
# 2. When perf is installed: links with that list, runs the scenarios again natively while
#    recording page faults, and appends each function whose code faulted outside the list
#    (code that runs only on the real CPU, such as SHA extensions valgrind lacks).
#
# Needs valgrind, PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres), ~10 minutes
# after the build. Everything listens on 127.0.0.1 only.
# Usage: scripts/bench/code-order.sh
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
ORDER="$REPO/crates/ranvier/code-order.txt"
WORK="$(mktemp -d /var/tmp/ranvier-code-order.XXXXXX)"
PORT="${CODE_ORDER_PORT:-18019}"
PGDB="${CODE_ORDER_PGDB:-ranvier_code_order}"
PG=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -q)
log() { echo "[code-order] $*" >&2; }

command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }

build() {
    (cd "$REPO" && cargo build --release -p ranvier -p ranvier-bench)
}

SERVER_PID=""
stop_server() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -INT "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap stop_server EXIT

# Runs every scenario against `$@ ranvier serve` on database $DB.
run_scenarios() {
    local db=$1
    shift
    rm -rf "$WORK/data"
    mkdir -p "$WORK/data"
    {
        echo 'server_name = "bench.local"'
        echo "listen = \"127.0.0.1:$PORT\""
        echo "data_dir = \"$WORK/data\""
        echo 'log = "warn"'
        echo '[registration]'
        echo 'enabled = true'
        echo '[rate_limits]'
        echo 'enabled = false'
        if [[ $db == postgres ]]; then
            echo '[database]'
            echo "url = \"postgres://postgres@127.0.0.1/$PGDB\""
        fi
    } > "$WORK/ranvier.toml"
    if [[ $db == postgres ]]; then
        "${PG[@]}" -c "DROP DATABASE IF EXISTS $PGDB" postgres
        "${PG[@]}" -c "CREATE DATABASE $PGDB ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' \
            TEMPLATE template0" postgres
    fi
    "$@" "$TARGET/release/ranvier" serve --config "$WORK/ranvier.toml" >"$WORK/server-$db.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:$PORT/_matrix/client/versions" >/dev/null && break
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "server did not start, see $WORK/server-$db.log" >&2; exit 1; }
        sleep 0.5
    done
    if [[ $PHASES == 1 ]]; then
        # One callgrind dump per phase: start-up, then each scenario.
        callgrind_control -d "$SERVER_PID" >/dev/null
        for scenario in $SCENARIOS; do
            bench "$db" "$scenario"
            callgrind_control -d "$SERVER_PID" >/dev/null
        done
    else
        bench "$db" all
    fi
    stop_server
}

bench() { # db scenarios
    "$TARGET/release/ranvier-bench" --url "http://127.0.0.1:$PORT" --scenarios "$2" --scale 1 \
        --case-timeout-secs 3000 >>"$WORK/bench-$1.jsonl" 2>>"$WORK/bench-$1.err"
}

log "building"
build
BINARY="$TARGET/release/ranvier"
SCENARIOS="register login create_rooms send fanout initial_sync join_large"
RUNS=()
for db in sqlite postgres; do
    log "callgrind, $db"
    PHASES=1 run_scenarios "$db" valgrind --tool=callgrind --demangle=no --dump-instr=no \
        --callgrind-out-file="$WORK/callgrind-$db.out"
    # Dumps are numbered from 1 in the order taken: start-up, then each scenario.
    dumps=()
    for i in $(seq 1 $(($(wc -w <<< "$SCENARIOS") + 1))); do
        dumps+=("$WORK/callgrind-$db.out.$i")
    done
    RUNS+=("$(IFS=,; echo "${dumps[*]}")")
done
python3 "$REPO/scripts/bench/code_order.py" phases "$BINARY" "${RUNS[@]}" > "$WORK/order.txt"
cp "$WORK/order.txt" "$ORDER"
log "$(wc -l < "$ORDER") functions from callgrind"

if command -v perf >/dev/null; then
    build
    for db in sqlite postgres; do
        log "page faults, $db"
        PHASES=0 run_scenarios "$db" perf record -q -e page-faults -c 1 -d -o "$WORK/faults-$db.data"
    done
    for db in sqlite postgres; do
        perf script --no-demangle -i "$WORK/faults-$db.data" -F ip,addr,sym,dso 2>/dev/null
    done | python3 "$REPO/scripts/bench/code_order.py" faults "$BINARY" "$WORK/order.txt" >> "$ORDER"
    log "$(wc -l < "$ORDER") functions with those that faulted natively"
    build
fi
rm -rf "$WORK"
log "wrote $ORDER"
