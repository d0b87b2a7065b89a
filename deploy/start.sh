#!/usr/bin/env bash
# Start the deployment on this machine under supervisord (in the foreground; SIGTERM or Ctrl-C
# stops all three): code server, webserver, daemon. Needs DAGSTER_PG_HOST/USER/PASSWORD/DB
# (see README, "Production"); everything else has a default (deploy/env.sh). DAGSTER_HOME gets
# deploy/dagster.yaml unless it already has a dagster.yaml.
set -euo pipefail
source "$(dirname "$0")/env.sh"

: "${DAGSTER_PG_HOST:?set DAGSTER_PG_HOST}" "${DAGSTER_PG_USER:?set DAGSTER_PG_USER}" "${DAGSTER_PG_DB:?set DAGSTER_PG_DB}"
: "${DAGSTER_PG_PASSWORD?set DAGSTER_PG_PASSWORD (may be empty with trust auth)}"

mkdir -p "$DAGSTER_HOME" "$CRON_PIPELINES_LOG_DIR" "$CRON_PIPELINES_RUN_DIR"
[ -e "$DAGSTER_HOME/dagster.yaml" ] || cp "$project/deploy/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
cd "$project"
exec "$CRON_PIPELINES_BIN/supervisord" -c "$project/deploy/supervisord.conf"
