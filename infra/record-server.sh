#!/usr/bin/env bash
# Records NAME=VALUE (CASETRAIL_PG_DSN or CASETRAIL_KAFKA_BOOTSTRAP) in <repo>/var/servers.env:
# the servers `make servers-start` started for this checkout, which its tests connect to when
# the environment names none (tests/support/servers.py). Without it they used the default
# ports, those of another checkout's servers (or CI's), and could wipe them.
set -euo pipefail
[[ $# == 2 ]] || { printf 'usage: %s NAME VALUE\n' "$0" >&2; exit 2; }
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RECORD="$REPO_ROOT/var/servers.env"
mkdir -p "$(dirname "$RECORD")"
# kafka-start and postgres-start may run at once (make -j): one writer at a time.
exec 9>"$RECORD.lock"
flock 9
{
    printf '# Written by make servers-start (infra/record-server.sh): the servers of this checkout.\n'
    if [[ -f "$RECORD" ]]; then grep -v -e '^#' -e "^$1=" "$RECORD" || true; fi
    printf '%s=%s\n' "$1" "$2"
} >"$RECORD.tmp"
mv "$RECORD.tmp" "$RECORD"
