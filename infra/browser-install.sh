#!/usr/bin/env bash
# Debian's chromium and chromium-driver for the console's browser tests (tests/console/), from
# apt when missing: no downloaded browser builds.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
  echo "browser-install: chromium and chromium-driver are missing; apt-get install chromium chromium-driver" >&2
  exit 1
fi
echo "browser-install: installing chromium and chromium-driver with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
