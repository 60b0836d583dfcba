#!/usr/bin/env bash
# Start a private PostgreSQL server on 127.0.0.1 for the distributed-tuning tests; print its URL.
# Installs Debian's postgresql first where it is missing. Usage: url=$(bash .ci/postgres.sh)
set -euo pipefail
PORT=${RAGOPT_PG_PORT:-$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")}
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
DATA=$(mktemp -d /tmp/ragopt-pg.XXXXXX)
RUN_AS=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$DATA"
  RUN_AS=(su postgres -s /bin/bash -c)
else
  RUN_AS=(bash -c)
fi
"${RUN_AS[@]}" "$BIN/initdb -D $DATA -A trust -U postgres >/dev/null"
"${RUN_AS[@]}" "$BIN/pg_ctl -D $DATA -l $DATA/server.log -w -o '-p $PORT -k $DATA -c listen_addresses=127.0.0.1' start >/dev/null"
"$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres ragopt_test
echo "postgresql://postgres@127.0.0.1:$PORT/ragopt_test"
