#!/usr/bin/env bash
# supervisorctl for the deployment started by deploy/start.sh, with the same settings:
#   deploy/ctl.sh status | restart daemon | tail -f webserver | stop all
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$CRON_PIPELINES_BIN/supervisorctl" -c "$project/deploy/supervisord.conf" "$@"
