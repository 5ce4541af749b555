#!/usr/bin/env bash
# Debian's kcat (librdkafka's command-line client): the outside Kafka subscriber of
# tests/integration/test_ledger_independent.py, so a client casetrail did not write reads the
# checkpoint topic. Installed from apt when missing; prints nothing when it is there.
set -euo pipefail
command -v kcat >/dev/null && exit 0
if [[ "$(id -u)" != 0 ]]; then
  echo "kcat-install: kcat is missing; apt-get install kcat" >&2
  exit 1
fi
echo "kcat-install: installing kcat with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends kcat >/dev/null
