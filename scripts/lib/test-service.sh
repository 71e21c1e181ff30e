# Shared by the scripts that start private test services (clamd, the S3 server) in the
# background: sourced, not run. The sourcing script defines `log` first.

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        log "need root for: $*"
        return 1
    fi
}

# Stop the process whose pid is in file $1 (named $2 in the log), if it still runs, and
# remove the pid file.
stop_pidfile() {
    if [[ -f "$1" ]]; then
        local pid
        pid="$(cat "$1")"
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            log "stopped $2 ($pid)"
        fi
        rm -f "$1"
    fi
}

# A port on 127.0.0.1 that nothing listens on now.
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}
