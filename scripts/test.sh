#!/usr/bin/env bash
# Run the whole test suite: unit tests, the storage conformance suite and the whole-server
# tests, on every backend in RANVIER_TEST_BACKENDS (default: sqlite,postgres).
#
# PostgreSQL is expected on 127.0.0.1:5432 with user `postgres` trusted (set
# RANVIER_TEST_POSTGRES_URL to use another server), or run SQLite alone:
#   RANVIER_TEST_BACKENDS=sqlite scripts/test.sh
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh -p ranvier --test it durability`.
set -euo pipefail
cd "$(dirname "$0")/.."

export RANVIER_TEST_BACKENDS="${RANVIER_TEST_BACKENDS:-sqlite,postgres}"

case ",${RANVIER_TEST_BACKENDS}," in
*,postgres,* | *,postgresql,* | *,pg,*)
    if [[ -z "${RANVIER_TEST_POSTGRES_URL:-}" ]] && ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
        echo "scripts/test.sh: PostgreSQL is not answering on 127.0.0.1:5432." >&2
        echo "  Start it (.ci/run does), point RANVIER_TEST_POSTGRES_URL at one," >&2
        echo "  or test SQLite alone: RANVIER_TEST_BACKENDS=sqlite scripts/test.sh" >&2
        exit 1
    fi
    ;;
esac

echo "scripts/test.sh: backends ${RANVIER_TEST_BACKENDS}"
# --no-fail-fast: every test binary runs and reports, even after one has failed.
exec cargo test --workspace --no-fail-fast "$@"
