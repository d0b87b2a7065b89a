# Sourced by deploy/start.sh and deploy/ctl.sh: the deployment's settings, with their defaults,
# so supervisord and supervisorctl always agree on DAGSTER_HOME, the ports and the socket.
project="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CRON_PIPELINES_DEPLOY_DIR="$project/deploy"

export DAGSTER_HOME="${DAGSTER_HOME:-/var/lib/cron-pipelines}"
export DAGSTER_PG_PORT="${DAGSTER_PG_PORT:-5432}"
export DAGSTER_CODE_SERVER_HOST="${DAGSTER_CODE_SERVER_HOST:-127.0.0.1}"
export DAGSTER_CODE_SERVER_PORT="${DAGSTER_CODE_SERVER_PORT:-4266}"
# Both webservers listen on loopback only: open-source Dagster has no login, and anyone who
# reaches the full one can launch a run that mails real users. Other machines come in
# through the authenticating proxy (PROXY_* below, README "Production").
export DAGSTER_WEBSERVER_HOST="${DAGSTER_WEBSERVER_HOST:-127.0.0.1}"
export DAGSTER_WEBSERVER_PORT="${DAGSTER_WEBSERVER_PORT:-3000}"
export DAGSTER_READONLY_WEBSERVER_PORT="${DAGSTER_READONLY_WEBSERVER_PORT:-3001}"
# The proxy (Caddy, deploy/proxy/Caddyfile) runs when PROXY_TLS_CERT is set.
export PROXY_BIND="${PROXY_BIND:-0.0.0.0}"
export PROXY_HOST="${PROXY_HOST:-localhost}"
export PROXY_OPERATOR_PORT="${PROXY_OPERATOR_PORT:-8443}"
export PROXY_AUDITOR_PORT="${PROXY_AUDITOR_PORT:-8444}"
export DAGSTER_WEBSERVER_UPSTREAM="$DAGSTER_WEBSERVER_HOST:$DAGSTER_WEBSERVER_PORT"
export DAGSTER_READONLY_WEBSERVER_UPSTREAM="$DAGSTER_WEBSERVER_HOST:$DAGSTER_READONLY_WEBSERVER_PORT"
export CRON_PIPELINES_CADDY="${CRON_PIPELINES_CADDY:-caddy}"
export DAGSTER_WORKSPACE="${DAGSTER_WORKSPACE:-$project/deploy/workspace.yaml}"
export CRON_PIPELINES_BIN="${CRON_PIPELINES_BIN:-$project/.venv/bin}"
# Steps one Celery worker runs at once (DELIVERY_EXECUTOR=celery): about one per core.
export CELERY_WORKER_CONCURRENCY="${CELERY_WORKER_CONCURRENCY:-2}"
# supervisord's pid file and control socket (a Unix socket path must stay under ~100 characters).
export CRON_PIPELINES_RUN_DIR="${CRON_PIPELINES_RUN_DIR:-$DAGSTER_HOME/supervisor}"
# One rotated log per program. Not $DAGSTER_HOME/logs: Dagster's telemetry uploader owns that
# folder and empties it, which would take the log files away and stop supervisord from
# restarting a program.
export CRON_PIPELINES_LOG_DIR="${CRON_PIPELINES_LOG_DIR:-$DAGSTER_HOME/supervisor/logs}"
