#!/usr/bin/env bash
# Start a private S3-compatible server (moto, from PyPI) for the media storage tests and print
# one line: its endpoint, an access key id and its secret (`http://127.0.0.1:PORT KEY SECRET`).
#
# moto is installed into a virtualenv in RANVIER_S3_DIR (default /var/tmp/ranvier-s3), with
# Debian's python3-venv installed first when `python3 -m venv` is missing (as root, or through
# sudo). The server runs in the background on 127.0.0.1 with a free port and keeps everything
# in memory; each test creates its own bucket. Authentication is on: after the first three
# requests (which create an IAM user with an access key allowed s3:*), moto checks every
# request's Signature Version 4 signature, so the tests prove the client signs correctly.
# Running the script again reuses the server it started if that still answers; concurrent runs
# wait for each other. The line is also written to $RANVIER_S3_DIR/endpoint.
#
#   scripts/s3-test-setup.sh          # start (or reuse) and print the endpoint and keys
#   scripts/s3-test-setup.sh stop     # stop the server this script started
set -euo pipefail

dir="${RANVIER_S3_DIR:-/var/tmp/ranvier-s3}"
mkdir -p "$dir"
exec 9>"$dir/lock"
flock 9

log() {
    echo "s3-test-setup: $*" >&2
}

# shellcheck source=lib/test-service.sh
source "$(dirname "$0")/lib/test-service.sh"

# Whether an S3 server answers on 127.0.0.1:$1 (any HTTP answer will do: it refuses unsigned
# requests once it is set up).
answers() {
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$1/" 2>/dev/null)" || return 1
    [[ "$code" =~ ^[2-5][0-9][0-9]$ ]]
}

stop() {
    stop_pidfile "$dir/server.pid" "the S3 server"
    rm -f "$dir/endpoint"
}

if [[ "${1:-}" == stop ]]; then
    stop
    exit 0
fi

if [[ -f "$dir/endpoint" && -f "$dir/port" ]] && answers "$(cat "$dir/port")"; then
    cat "$dir/endpoint"
    exit 0
fi
stop

if ! command -v curl >/dev/null; then
    log "installing curl"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y curl >&2 || {
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y curl >&2
    }
fi

python="$(command -v python3 || true)"
if [[ -z "$python" ]]; then
    log "installing python3"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv >&2
    python="$(command -v python3)"
fi

if [[ ! -x "$dir/venv/bin/moto_server" ]]; then
    rm -rf "$dir/venv"
    if ! "$python" -m venv "$dir/venv" >&2; then
        log "python3 -m venv failed; installing python3-venv"
        rm -rf "$dir/venv"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >&2
        "$python" -m venv "$dir/venv" >&2
    fi
    log "installing moto[server] into $dir/venv"
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5,<6' >&2
fi

# One IAM call while moto does not check signatures yet (it routes by the service named in
# the credential scope, so the header only has to look like an IAM request).
iam() {
    curl -s --max-time 10 -H "Authorization: AWS4-HMAC-SHA256 Credential=SETUP/20240101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0" \
        --data-urlencode "Version=2010-05-08" "$@" "http://127.0.0.1:$1/"
}

# Create the test user, its key and its policy (the three unauthenticated requests); print
# "KEY SECRET".
provision() {
    local port="$1" reply key secret
    iam "$port" --data-urlencode Action=CreateUser --data-urlencode UserName=ranvier-test >/dev/null || return 1
    reply="$(iam "$port" --data-urlencode Action=CreateAccessKey --data-urlencode UserName=ranvier-test)" || return 1
    key="$(sed -n 's:.*<AccessKeyId>\([^<]*\)</AccessKeyId>.*:\1:p' <<<"$reply")"
    secret="$(sed -n 's:.*<SecretAccessKey>\([^<]*\)</SecretAccessKey>.*:\1:p' <<<"$reply")"
    iam "$port" --data-urlencode Action=PutUserPolicy --data-urlencode UserName=ranvier-test \
        --data-urlencode PolicyName=s3 \
        --data-urlencode 'PolicyDocument={"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}' \
        >/dev/null || return 1
    [[ -n "$key" && -n "$secret" ]] || return 1
    echo "$key $secret"
}

for attempt in 1 2 3; do
    port="$(free_port)"
    log "starting moto_server on 127.0.0.1:$port (attempt $attempt)"
    # The lock must not outlive this script: the server would inherit it and hold it forever.
    INITIAL_NO_AUTH_ACTION_COUNT=3 nohup "$dir/venv/bin/moto_server" -H 127.0.0.1 -p "$port" \
        >"$dir/server.log" 2>&1 9>&- &
    echo $! >"$dir/server.pid"
    for _ in $(seq 1 120); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            if ! keys="$(provision "$port")"; then
                log "could not create the test credentials; the server's log:"
                tail -n 30 "$dir/server.log" >&2 || true
                break
            fi
            echo "$port" >"$dir/port"
            echo "http://127.0.0.1:$port $keys" >"$dir/endpoint"
            cat "$dir/endpoint"
            exit 0
        fi
        if ! kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then
            break
        fi
        sleep 0.5
    done
    log "the S3 server did not answer on 127.0.0.1:$port; its log:"
    tail -n 30 "$dir/server.log" >&2 || true
    stop
done
exit 1
