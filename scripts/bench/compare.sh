#!/usr/bin/env bash
# compare.sh — runs the ranvier-bench scenarios against Ranvier and Synapse alternately
# (A B A B ...), each server started afresh on an empty database every round, collects
# the JSON lines into one results file and prints medians per scenario and figure with
# the Ranvier/Synapse ratio.
#
# Usage: scripts/bench/compare.sh [--rounds N] [--db sqlite|postgres] [--scale X]
#          [--scenarios LIST] [--servers ranvier,synapse] [--out FILE] [--no-build]
#
# Synapse is installed from PyPI into /var/tmp/ranvier-bench/synapse-venv (reused when
# present). PostgreSQL is expected at 127.0.0.1:5432 with trust auth for user postgres.
# Everything listens on 127.0.0.1 only.
set -euo pipefail

ROUNDS=3
DB=sqlite
SCALE=1
SCENARIOS=all
SERVERS=ranvier,synapse
OUT=""
BUILD=1

while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --db) DB="$2"; shift 2 ;;
        --scale) SCALE="$2"; shift 2 ;;
        --scenarios) SCENARIOS="$2"; shift 2 ;;
        --servers) SERVERS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
case "$DB" in sqlite|postgres) ;; *) echo "--db must be sqlite or postgres" >&2; exit 2 ;; esac

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
WORK=/var/tmp/ranvier-bench
VENV="$WORK/synapse-venv"
PY="$VENV/bin/python"
SYNAPSE_PORT=18008
RANVIER_PORT=18009
PG=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -q)
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="${OUT:-$WORK/results-$DB-$STAMP.jsonl}"
LOGDIR="$WORK/logs-$DB-$STAMP"
mkdir -p "$WORK" "$LOGDIR"
: > "$OUT"

log() { echo "[compare] $*" >&2; }

# --- Synapse installation -------------------------------------------------------------
if ! "$PY" -c 'import synapse, psycopg2, matplotlib' 2>/dev/null; then
    log "installing Synapse into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q matrix-synapse psycopg2-binary matplotlib
fi
SYNAPSE_VERSION="$("$PY" -c 'import synapse; print(synapse.__version__)')"

# --- Build ----------------------------------------------------------------------------
if [[ $BUILD == 1 ]]; then
    log "building ranvier and ranvier-bench (release)"
    (cd "$REPO" && cargo build --release -p ranvier -p ranvier-bench)
fi
BENCH="${RANVIER_BENCH_BIN:-$TARGET/release/ranvier-bench}"
RANVIER="$TARGET/release/ranvier"
[[ -x $BENCH ]] || { echo "missing $BENCH (build it first)" >&2; exit 1; }

# --- Synapse configuration (generated once per invocation) ----------------------------
SYN_DIR="$WORK/synapse"
SYN_DATA="$SYN_DIR/data"
mkdir -p "$SYN_DIR"
if [[ ! -f $SYN_DIR/homeserver.yaml ]]; then
    (cd "$SYN_DIR" && "$PY" -m synapse.app.homeserver --server-name bench.local \
        --config-path homeserver.yaml --generate-config --report-stats=no \
        --data-directory "$SYN_DATA" >/dev/null)
fi
cat > "$SYN_DIR/log.yaml" <<EOF
version: 1
formatters:
  plain:
    format: '%(asctime)s %(levelname)s %(name)s %(message)s'
handlers:
  file:
    class: logging.FileHandler
    filename: $SYN_DIR/homeserver.log
    formatter: plain
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
EOF
if [[ $DB == postgres ]]; then
    SYN_DB="database:
  name: psycopg2
  args:
    user: postgres
    host: 127.0.0.1
    port: 5432
    database: bench_synapse
    cp_min: 5
    cp_max: 10"
else
    SYN_DB="database:
  name: sqlite3
  args:
    database: $SYN_DATA/homeserver.db"
fi
# Later -c files override earlier ones: this one sets the benchmark's choices.
cat > "$SYN_DIR/bench.yaml" <<EOF
listeners:
  - port: $SYNAPSE_PORT
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
$SYN_DB
log_config: $SYN_DIR/log.yaml
media_store_path: $SYN_DATA/media_store
pid_file: $SYN_DATA/homeserver.pid
report_stats: false
enable_registration: true
enable_registration_without_verification: true
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
url_preview_enabled: false
rc_message: {per_second: 100000, burst_count: 100000}
rc_registration: {per_second: 100000, burst_count: 100000}
rc_registration_token_validity: {per_second: 100000, burst_count: 100000}
rc_login:
  address: {per_second: 100000, burst_count: 100000}
  account: {per_second: 100000, burst_count: 100000}
  failed_attempts: {per_second: 100000, burst_count: 100000}
rc_joins:
  local: {per_second: 100000, burst_count: 100000}
  remote: {per_second: 100000, burst_count: 100000}
rc_joins_per_room: {per_second: 100000, burst_count: 100000}
rc_invites:
  per_room: {per_second: 100000, burst_count: 100000}
  per_user: {per_second: 100000, burst_count: 100000}
  per_issuer: {per_second: 100000, burst_count: 100000}
rc_room_creation: {per_second: 100000, burst_count: 100000}
rc_3pid_validation: {per_second: 100000, burst_count: 100000}
rc_admin_redaction: {per_second: 100000, burst_count: 100000}
rc_presence:
  per_user: {per_second: 100000, burst_count: 100000}
rc_delayed_event_mgmt: {per_second: 100000, burst_count: 100000}
rc_reports: {per_second: 100000, burst_count: 100000}
EOF

# --- Ranvier configuration ------------------------------------------------------------
RAN_DIR="$WORK/ranvier"
RAN_DATA="$RAN_DIR/data"
mkdir -p "$RAN_DIR"
{
    echo 'server_name = "bench.local"'
    echo "listen = \"127.0.0.1:$RANVIER_PORT\""
    echo "data_dir = \"$RAN_DATA\""
    echo 'log = "warn"'
    echo '[registration]'
    echo 'enabled = true'
    echo '[rate_limits]'
    echo 'enabled = false'
    if [[ $DB == postgres ]]; then
        echo '[database]'
        echo 'url = "postgres://postgres@127.0.0.1/bench_ranvier"'
    fi
} > "$RAN_DIR/ranvier.toml"

# --- Server lifecycle -----------------------------------------------------------------
SERVER_PID=""

stop_server() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 60); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.5
        done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap stop_server EXIT

fresh_pg_db() {
    "${PG[@]}" -c "DROP DATABASE IF EXISTS $1" postgres
    "${PG[@]}" -c "CREATE DATABASE $1 ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' TEMPLATE template0" postgres
}

# Something else already answering on the port would be measured in the server's place.
port_free() { # port
    if curl -s -o /dev/null "http://127.0.0.1:$1/"; then
        log "port $1 is already in use; stop whatever listens there first"
        exit 1
    fi
}

wait_ready() { # port
    for _ in $(seq 1 240); do
        if curl -sf "http://127.0.0.1:$1/_matrix/client/versions" >/dev/null; then
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        sleep 0.5
    done
    return 1
}

start_synapse() { # log file
    rm -rf "$SYN_DATA"
    mkdir -p "$SYN_DATA"
    [[ $DB == postgres ]] && fresh_pg_db bench_synapse
    port_free "$SYNAPSE_PORT"
    (cd "$SYN_DIR" && exec "$PY" -m synapse.app.homeserver \
        -c homeserver.yaml -c bench.yaml) >"$1" 2>&1 &
    SERVER_PID=$!
    wait_ready "$SYNAPSE_PORT"
}

start_ranvier() { # log file
    rm -rf "$RAN_DATA"
    mkdir -p "$RAN_DATA"
    [[ $DB == postgres ]] && fresh_pg_db bench_ranvier
    [[ -x $RANVIER ]] || return 1
    port_free "$RANVIER_PORT"
    RANVIER_SERVER_NAME=bench.local \
        RANVIER_LISTEN="127.0.0.1:$RANVIER_PORT" \
        RANVIER_DATA_DIR="$RAN_DATA" \
        RANVIER_RATE_LIMITS__ENABLED=false \
        RANVIER_REGISTRATION__ENABLED=true \
        "$RANVIER" serve --config "$RAN_DIR/ranvier.toml" >"$1" 2>&1 &
    SERVER_PID=$!
    wait_ready "$RANVIER_PORT"
}

annotate() { # round server — adds round, db, server version and the machine's load to every line
    "$PY" -c '
import json, sys
extra = {"round": int(sys.argv[1]), "db": sys.argv[2], "version": sys.argv[3]}
for line in sys.stdin:
    line = line.strip()
    if line:
        # The 1-minute load average when the case finished: the machine may be shared.
        with open("/proc/loadavg") as f:
            load = float(f.read().split()[0])
        print(json.dumps({**json.loads(line), **extra, "loadavg_1m": load}), flush=True)
' "$1" "$DB" "$2"
}

run_one() { # round server
    local round=$1 server=$2 port version logf="$LOGDIR/$2-round$1.log"
    if [[ $server == synapse ]]; then
        port=$SYNAPSE_PORT; version="synapse $SYNAPSE_VERSION"
        log "round $round: synapse ($DB)"
        start_synapse "$logf" || { log "synapse did not start, see $logf"; stop_server; return 1; }
    else
        port=$RANVIER_PORT; version="ranvier $(git -C "$REPO" rev-parse --short HEAD)"
        log "round $round: ranvier ($DB)"
        if ! start_ranvier "$logf"; then
            log "ranvier did not start, see $logf"
            stop_server
            echo "{\"scenario\":\"startup\",\"case\":\"-\",\"label\":\"ranvier\",\"error\":\"server did not start\"}" \
                | annotate "$round" "$version" >> "$OUT"
            return 0
        fi
    fi
    "$BENCH" --url "http://127.0.0.1:$port" --scenarios "$SCENARIOS" --scale "$SCALE" \
        --server-pid "$SERVER_PID" --label "$server" 2>>"$LOGDIR/bench-$server-round$round.err" \
        | annotate "$round" "$version" | tee -a "$OUT" >&2
    stop_server
}

IFS=, read -r -a SERVER_LIST <<< "$SERVERS"
for round in $(seq 1 "$ROUNDS"); do
    for server in "${SERVER_LIST[@]}"; do
        run_one "$round" "$server"
    done
done

log "results: $OUT"
"$PY" "$REPO/scripts/bench/summarize.py" "$OUT"
