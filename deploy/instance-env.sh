#!/usr/bin/env bash
# Runs a command with only what a process of the Dagster instance needs: the instance's
# database (DAGSTER_*, PG*), the locale and the paths. The webservers and the daemon start
# through it, so they never hold the code location's secrets (service keys, SMTP password)
# even when deploy/start.sh got them in its environment: only the code server and the run
# workers it starts use those.
# The proxy (CRON_PIPELINES_ENV_PROFILE=proxy, set by deploy/proxy/supervisord.conf) gets
# less still: only what deploy/proxy/Caddyfile reads, and HOME and the XDG folders where Caddy
# keeps its state. It never holds the database's password.
set -euo pipefail
profile="${CRON_PIPELINES_ENV_PROFILE:-instance}"
case "$profile" in
  instance) keep=(PATH HOME LANG TZ) ;;
  proxy) keep=(PATH HOME XDG_CONFIG_HOME XDG_DATA_HOME DAGSTER_WEBSERVER_UPSTREAM DAGSTER_READONLY_WEBSERVER_UPSTREAM) ;;
  *) echo "instance-env.sh: unknown CRON_PIPELINES_ENV_PROFILE=$profile (instance or proxy)" >&2; exit 2 ;;
esac
for name in $(compgen -e); do
  case "$profile:$name" in
    instance:DAGSTER_* | instance:PG* | instance:LC_* | proxy:PROXY_*) keep+=("$name") ;;
  esac
done
environment=()
for name in "${keep[@]}"; do
  [ -n "${!name+set}" ] && environment+=("$name=${!name}")
done
exec env -i "${environment[@]}" "$@"
