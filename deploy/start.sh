#!/usr/bin/env bash
# Start the deployment on this machine under supervisord: code server, webserver, daemon.
# Needs DAGSTER_PG_HOST/PORT/USER/PASSWORD/DB (see README, "Production"); everything else
# has a default. DAGSTER_HOME gets deploy/dagster.yaml unless it already has a dagster.yaml.
set -euo pipefail
project="$(cd "$(dirname "$0")/.." && pwd)"

export DAGSTER_HOME="${DAGSTER_HOME:-/var/lib/cron-pipelines}"
export DAGSTER_PG_PORT="${DAGSTER_PG_PORT:-5432}"

: "${DAGSTER_PG_HOST:?set DAGSTER_PG_HOST}" "${DAGSTER_PG_USER:?set DAGSTER_PG_USER}" "${DAGSTER_PG_DB:?set DAGSTER_PG_DB}"
: "${DAGSTER_PG_PASSWORD?set DAGSTER_PG_PASSWORD (may be empty with trust auth)}"
export DAGSTER_CODE_SERVER_HOST="${DAGSTER_CODE_SERVER_HOST:-127.0.0.1}"
export DAGSTER_CODE_SERVER_PORT="${DAGSTER_CODE_SERVER_PORT:-4266}"
export DAGSTER_WEBSERVER_HOST="${DAGSTER_WEBSERVER_HOST:-0.0.0.0}"
export DAGSTER_WEBSERVER_PORT="${DAGSTER_WEBSERVER_PORT:-3000}"
export DAGSTER_WORKSPACE="${DAGSTER_WORKSPACE:-$project/deploy/workspace.yaml}"
export CRON_PIPELINES_BIN="${CRON_PIPELINES_BIN:-$project/.venv/bin}"
export CRON_PIPELINES_LOG_DIR="${CRON_PIPELINES_LOG_DIR:-$DAGSTER_HOME/logs}"
export CRON_PIPELINES_RUN_DIR="${CRON_PIPELINES_RUN_DIR:-$DAGSTER_HOME/run}"

mkdir -p "$DAGSTER_HOME" "$CRON_PIPELINES_LOG_DIR" "$CRON_PIPELINES_RUN_DIR"
[ -e "$DAGSTER_HOME/dagster.yaml" ] || cp "$project/deploy/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
cd "$project"
exec "$CRON_PIPELINES_BIN/supervisord" -c "$project/deploy/supervisord.conf"
