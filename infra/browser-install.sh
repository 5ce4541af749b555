#!/usr/bin/env bash
# What the console's browser tests (tests/console/) need: Debian's chromium and chromium-driver
# from apt when missing (no downloaded browser builds), and axe-core from npm (the
# accessibility checker the tests inject into each page) in ~/.cache/casetrail, outside the
# repository. Prints nothing when everything is there.
set -euo pipefail
AXE_VERSION=4.14.1
AXE_DIR="${CASETRAIL_AXE_DIR:-$HOME/.cache/casetrail/axe-core-$AXE_VERSION}"

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [[ "$(id -u)" != 0 ]]; then
    echo "browser-install: chromium and chromium-driver are missing; apt-get install chromium chromium-driver" >&2
    exit 1
  fi
  echo "browser-install: installing chromium and chromium-driver with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi

if [[ ! -f "$AXE_DIR/node_modules/axe-core/axe.min.js" ]]; then
  if ! command -v npm >/dev/null; then
    [[ "$(id -u)" == 0 ]] || { echo "browser-install: npm is missing (apt-get install npm)" >&2; exit 1; }
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  echo "browser-install: axe-core $AXE_VERSION from npm into $AXE_DIR" >&2
  mkdir -p "$AXE_DIR"
  npm install --silent --no-audit --no-fund --prefix "$AXE_DIR" "axe-core@$AXE_VERSION" >/dev/null
fi
