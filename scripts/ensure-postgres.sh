#!/usr/bin/env bash
# The tests need PostgreSQL on 127.0.0.1:5432 (CRON_PIPELINES_TEST_PG_* to point elsewhere):
# start the local cluster when it is installed and not running.
set -euo pipefail
host="${CRON_PIPELINES_TEST_PG_HOST:-127.0.0.1}"
port="${CRON_PIPELINES_TEST_PG_PORT:-5432}"
if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then
  exit 0
fi
if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
fi
for _ in $(seq 1 30); do
  pg_isready -q -h "$host" -p "$port" && exit 0
  sleep 1
done
echo "PostgreSQL is not reachable on $host:$port" >&2
exit 1
