#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL server: starts one on 127.0.0.1 in a temporary
# directory, exports SPLITSEG_TEST_PG (a libpq connection string for it), runs the command, then
# stops the server and deletes the directory. Exits with the command's status.
#   scripts/with-postgres.sh build/unit_tests --gtest_filter='*Postgres*'
# Needs Debian's postgresql package. initdb refuses to run as root, so as root the server runs as
# the postgres user.
set -euo pipefail
if [ $# -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "with-postgres: no PostgreSQL server installed (apt-get install postgresql)" >&2
    exit 1
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/splitseg-pg.XXXXXX")
as_server=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$dir"
    as_server=(runuser -u postgres --)
fi
cleanup() {
    if [ -f "$dir/data/postmaster.pid" ]; then
        "${as_server[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate -t 30 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! "${as_server[@]}" "$bindir/initdb" -D "$dir/data" -A trust -U postgres --no-sync \
    >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    exit 1
fi

# A random port; another one if something already listens there. fsync stays on, so the
# throughput the tests print is what a real server gives.
port=""
for _ in 1 2 3 4 5; do
    candidate=$((20000 + RANDOM % 40000))
    if "${as_server[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-k '$dir' -p $candidate -c listen_addresses=127.0.0.1" start >/dev/null 2>&1; then
        port=$candidate
        break
    fi
done
if [ -z "$port" ]; then
    echo "with-postgres: the server did not start; its log:" >&2
    cat "$dir/server.log" >&2 || true
    exit 1
fi

export SPLITSEG_TEST_PG="host=127.0.0.1 port=$port dbname=postgres user=postgres"
status=0
"$@" || status=$?
exit "$status"
