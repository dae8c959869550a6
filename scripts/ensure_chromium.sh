#!/usr/bin/env bash
# Installs Debian's Chromium for the console's browser tests when it is missing (as root, from
# the OS's apt sources; Playwright's own browser downloads are never used). Idempotent.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "Chromium is missing: run 'apt-get install chromium' as root (the console's browser tests need it)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends chromium >/dev/null \
  || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }
/usr/bin/chromium --version
