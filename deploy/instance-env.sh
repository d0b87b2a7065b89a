#!/usr/bin/env bash
# Runs a command with only what a process of the Dagster instance needs: the instance's
# database (DAGSTER_*, PG*), the locale and the paths. The webservers, the daemon and the
# proxy start through it, so they never hold the code location's secrets (service keys, SMTP
# password) even when deploy/start.sh got them in its environment: only the code server
# and the run workers it starts use those.
set -euo pipefail
keep=(PATH HOME LANG TZ)
for name in $(compgen -e); do
  case "$name" in DAGSTER_* | PG* | PROXY_* | LC_*) keep+=("$name") ;; esac
done
environment=()
for name in "${keep[@]}"; do
  [ -n "${!name+set}" ] && environment+=("$name=${!name}")
done
exec env -i "${environment[@]}" "$@"
