#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the team-store tests.
#   eval "$(bash scripts/test_postgres.sh start)"   # exports TASKFIT_TEST_PG_URL and TASKFIT_TEST_PG_DIR
#   bash scripts/test_postgres.sh stop              # stops it and removes its folder
# Installs Debian's `postgresql` package when no server binaries are found. PostgreSQL refuses to run as
# root, so under root the server runs as the `postgres` user the package creates.
set -euo pipefail
cmd=${1:-start}
as_server_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}
if [ "$cmd" = stop ]; then
  dir=${TASKFIT_TEST_PG_DIR:?set by start}
  as_server_user "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  exit 0
fi
if [ -z "$(pg_bin)" ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql; } >&2
fi
bin=$(pg_bin)
dir=$(mktemp -d /tmp/taskfit-pg.XXXXXX)
chmod 755 "$dir"
[ "$(id -u)" = 0 ] && chown postgres "$dir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_server_user "$bin/initdb" -D "$dir/data" -U taskfit -A trust --no-sync >/dev/null
as_server_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >/dev/null
echo "export TASKFIT_TEST_PG_URL=postgresql+psycopg://taskfit@127.0.0.1:$port/postgres"
echo "export TASKFIT_TEST_PG_DIR=$dir"
