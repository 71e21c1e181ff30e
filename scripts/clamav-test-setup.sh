#!/usr/bin/env bash
# Start a private clamd for the media scanning tests and print its address (tcp://127.0.0.1:PORT).
#
# Installs Debian's clamav-daemon when clamd is missing (as root, or through sudo). No virus
# signatures are downloaded: the database directory holds one signature of our own that
# matches the EICAR test string, so clamd starts in a second and detects exactly that.
# clamd runs in the background on 127.0.0.1 with a free port, its configuration, database,
# log and pid file in RANVIER_CLAMAV_DIR (default /var/tmp/ranvier-clamav). Running the
# script again reuses the clamd it started if that still answers; concurrent runs wait for
# each other. The address is also written to $RANVIER_CLAMAV_DIR/address.
#
#   scripts/clamav-test-setup.sh          # start (or reuse) and print the address
#   scripts/clamav-test-setup.sh stop     # stop the clamd this script started
set -euo pipefail

dir="${RANVIER_CLAMAV_DIR:-/var/tmp/ranvier-clamav}"
mkdir -p "$dir"
exec 9>"$dir/lock"
flock 9

log() {
    echo "clamav-test-setup: $*" >&2
}

# shellcheck source=lib/test-service.sh
source "$(dirname "$0")/lib/test-service.sh"

# Whether clamd answers PING on 127.0.0.1:$1.
answers() {
    local reply
    reply="$(
        exec 2>/dev/null
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'zPING\0' >&3
        timeout 5 head -c 5 <&3 | tr -d '\0'
    )" || return 1
    [[ "$reply" == PONG* ]]
}

stop() {
    stop_pidfile "$dir/clamd.pid" "clamd"
    rm -f "$dir/address"
}

if [[ "${1:-}" == stop ]]; then
    stop
    exit 0
fi

if [[ -f "$dir/address" && -f "$dir/port" ]] && answers "$(cat "$dir/port")"; then
    cat "$dir/address"
    exit 0
fi
stop

clamd_bin="$(command -v clamd || true)"
if [[ -z "$clamd_bin" && -x /usr/sbin/clamd ]]; then
    clamd_bin=/usr/sbin/clamd
fi
if [[ -z "$clamd_bin" ]]; then
    log "installing clamav-daemon"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y clamav-daemon >&2 || {
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y clamav-daemon >&2
    }
    clamd_bin=/usr/sbin/clamd
fi

# One body signature (ndb: name, any file type, any offset, hex bytes) for the 68-byte EICAR
# test string. Written as hex so that this script is not itself flagged by scanners.
mkdir -p "$dir/db" "$dir/tmp"
eicar_hex="58354f2150254041505b345c505a58353428505e2937434329377d2445494341522d5354414e444152442d414e544956495255532d544553542d46494c452124482b482a"
printf 'Ranvier.Test.EICAR:0:*:%s\n' "$eicar_hex" >"$dir/db/ranvier-test.ndb"

# A port that nothing answers on; if clamd cannot bind it after all, the loop below tries again.
start_clamd() {
    cat >"$dir/clamd.conf" <<EOF
TCPSocket $1
TCPAddr 127.0.0.1
DatabaseDirectory $dir/db
TemporaryDirectory $dir/tmp
LogFile $dir/clamd.log
LogTime yes
PidFile $dir/clamd.pid
Foreground no
StreamMaxLength 200M
MaxFileSize 200M
MaxScanSize 400M
MaxThreads 2
ReadTimeout 60
SelfCheck 3600
EOF
    # clamd drops to another user only when its configuration names one; this one runs as
    # the caller, who can write the directory.
    : >"$dir/clamd.log"
    log "starting clamd on 127.0.0.1:$1 with the database in $dir/db"
    # The lock must not outlive this script: clamd would inherit it and hold it forever.
    "$clamd_bin" --config-file="$dir/clamd.conf" >&2 9>&-
}

for attempt in 1 2 3; do
    port="$(free_port)"
    if ! start_clamd "$port"; then
        log "clamd did not start (attempt $attempt); its log:"
        tail -n 20 "$dir/clamd.log" >&2 || true
        continue
    fi
    for _ in $(seq 1 120); do
        if answers "$port"; then
            echo "$port" >"$dir/port"
            echo "tcp://127.0.0.1:$port" >"$dir/address"
            cat "$dir/address"
            exit 0
        fi
        sleep 0.5
    done
    log "clamd did not answer on 127.0.0.1:$port; its log:"
    tail -n 30 "$dir/clamd.log" >&2 || true
    stop
done
exit 1
