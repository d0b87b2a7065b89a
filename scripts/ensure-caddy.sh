#!/usr/bin/env bash
# The access tests run the deployment's TLS proxy (deploy/proxy/Caddyfile): install Caddy from
# the distribution's packages when it is missing (Debian and Ubuntu ship it as `caddy`). The
# Caddyfile needs Caddy 2.6 or newer (`servers { protocols h1 h2 }`, which turns HTTP/3 off).
set -euo pipefail
if ! command -v caddy >/dev/null && command -v apt-get >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q caddy >/dev/null \
    || { $sudo apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q caddy >/dev/null; }
fi
command -v caddy >/dev/null || { echo "caddy is required by the tests and could not be installed" >&2; exit 1; }
version="$(caddy version | grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n 1 || true)"
if [ "$(printf '%s\n' 2.6 "$version" | sort -V | head -n 1)" != 2.6 ]; then
  echo "deploy/proxy/Caddyfile needs Caddy 2.6 or newer, this one is ${version:-of an unknown version}" >&2
  exit 1
fi
