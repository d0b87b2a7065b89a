#!/usr/bin/env bash
# The Celery tests need Redis on 127.0.0.1:6379 (CRON_PIPELINES_TEST_REDIS_PORT to use another port):
# start a throwaway one, keeping nothing on disk, when none answers.
set -euo pipefail
port="${CRON_PIPELINES_TEST_REDIS_PORT:-6379}"
if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
  exit 0
fi
if ! command -v redis-server >/dev/null; then
  echo "Redis is not reachable on 127.0.0.1:$port and redis-server is not installed" >&2
  exit 1
fi
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir /tmp \
  --logfile "/tmp/cron-pipelines-redis-$port.log"
for _ in $(seq 1 30); do
  redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "Redis did not start on 127.0.0.1:$port" >&2
exit 1
