#!/usr/bin/env bash
# Start the deployment on this machine under supervisord (in the foreground; SIGTERM or Ctrl-C
# stops them all): code server, webserver, read-only webserver, daemon, the TLS proxy when
# PROXY_TLS_CERT is set, and a Celery worker when DELIVERY_EXECUTOR=celery. Needs
# DAGSTER_PG_HOST/USER/PASSWORD/DB (see README, "Production"); everything else has a default
# (deploy/env.sh). DAGSTER_HOME gets deploy/dagster.yaml unless it already has a dagster.yaml.
set -euo pipefail
# Run storage, compute logs and the outbox hold names and addresses: nothing this deployment
# creates is readable by other users of the machine.
umask 077
source "$(dirname "$0")/env.sh"

: "${DAGSTER_PG_HOST:?set DAGSTER_PG_HOST}" "${DAGSTER_PG_USER:?set DAGSTER_PG_USER}" "${DAGSTER_PG_DB:?set DAGSTER_PG_DB}"
: "${DAGSTER_PG_PASSWORD?set DAGSTER_PG_PASSWORD (may be empty with trust auth)}"

mkdir -p "$DAGSTER_HOME" "$CRON_PIPELINES_LOG_DIR" "$CRON_PIPELINES_RUN_DIR/programs"
# The umask covers what is new; a DAGSTER_HOME made before (by hand, by an older release, under
# another umask) may still be open. Close it, and whatever this user owns in it, before anything
# starts. Symbolic links are left alone: chmod would follow them out of DAGSTER_HOME.
chmod 0700 "$DAGSTER_HOME" || { echo "cannot make $DAGSTER_HOME private: it must belong to $(id -un)" >&2; exit 1; }
find -H "$DAGSTER_HOME" -mindepth 1 -user "$(id -u)" ! -type l -perm /077 -exec chmod go-rwx {} +
rm -f "$CRON_PIPELINES_RUN_DIR/programs/proxy.conf" "$CRON_PIPELINES_RUN_DIR/programs/celery-worker.conf"
if [ -n "${PROXY_TLS_CERT:-}" ]; then
  : "${PROXY_TLS_KEY:?set PROXY_TLS_KEY with PROXY_TLS_CERT}"
  : "${PROXY_OPERATOR_USER:?set PROXY_OPERATOR_USER}" "${PROXY_OPERATOR_PASSWORD_HASH:?set PROXY_OPERATOR_PASSWORD_HASH (caddy hash-password)}"
  : "${PROXY_AUDITOR_USER:?set PROXY_AUDITOR_USER}" "${PROXY_AUDITOR_PASSWORD_HASH:?set PROXY_AUDITOR_PASSWORD_HASH (caddy hash-password)}"
  cp "$project/deploy/proxy/supervisord.conf" "$CRON_PIPELINES_RUN_DIR/programs/proxy.conf"
fi
# Sharded deliveries on Celery: this machine also runs a worker (README, "Scaling out").
if [ "${DELIVERY_EXECUTOR:-}" = "celery" ]; then
  cp "$project/deploy/celery/supervisord.conf" "$CRON_PIPELINES_RUN_DIR/programs/celery-worker.conf"
fi
[ -e "$DAGSTER_HOME/dagster.yaml" ] || cp "$project/deploy/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
cd "$project"
exec "$CRON_PIPELINES_BIN/supervisord" -c "$project/deploy/supervisord.conf"
