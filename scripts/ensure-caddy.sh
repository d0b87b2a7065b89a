#!/usr/bin/env bash
# The access tests run the deployment's TLS proxy (deploy/proxy/Caddyfile): install Caddy from
# the distribution's packages when it is missing (Debian and Ubuntu ship it as `caddy`).
set -euo pipefail
if command -v caddy >/dev/null; then
  exit 0
fi
if command -v apt-get >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q caddy >/dev/null \
    || { $sudo apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q caddy >/dev/null; }
fi
command -v caddy >/dev/null || { echo "caddy is required by the tests and could not be installed" >&2; exit 1; }
