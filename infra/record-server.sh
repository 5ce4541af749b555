#!/usr/bin/env bash
# Records NAME=VALUE (CASETRAIL_PG_DSN or CASETRAIL_KAFKA_BOOTSTRAP) in <repo>/var/servers.env:
# the servers `make servers-start` started for this checkout, which its tests connect to when
# the environment names none (tests/support/servers.py). Without it they used the default
# ports, those of another checkout's servers (or CI's), and could wipe them.
# Beside the address, what the server's scripts resolved from the same environment
# (CASETRAIL_PG_DIR; CASETRAIL_KAFKA_DIR, CASETRAIL_KAFKA_CONTROLLER_PORT), so that the fault
# suite and the soak run stop and start that server, not one in the default dir
# (infra/servers.py script_environment).
set -euo pipefail
[[ $# == 2 ]] || { printf 'usage: %s NAME VALUE\n' "$0" >&2; exit 2; }
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RECORD="$REPO_ROOT/var/servers.env"

# NAME=VALUE lines of the settings infra/<server>/common.sh resolves (a subshell: it sets
# variables and functions of its own).
resolved_settings() {
    case "$1" in
        CASETRAIL_PG_DSN)
            (source "$REPO_ROOT/infra/postgres/common.sh" && printf 'CASETRAIL_PG_DIR=%s\n' "$PG_DIR") ;;
        CASETRAIL_KAFKA_BOOTSTRAP)
            (source "$REPO_ROOT/infra/kafka/common.sh" \
                && printf 'CASETRAIL_KAFKA_DIR=%s\nCASETRAIL_KAFKA_CONTROLLER_PORT=%s\n' \
                    "$KAFKA_DIR" "$KAFKA_CONTROLLER_PORT") ;;
    esac
}
settings="$(printf '%s=%s\n' "$1" "$2"; resolved_settings "$1")"
names="$(printf '%s\n' "$settings" | cut -d= -f1 | sed 's/.*/^&=/')"
mkdir -p "$(dirname "$RECORD")"
# kafka-start and postgres-start may run at once (make -j): one writer at a time.
exec 9>"$RECORD.lock"
flock 9
{
    printf '# Written by make servers-start (infra/record-server.sh): the servers of this checkout.\n'
    if [[ -f "$RECORD" ]]; then grep -v -e '^#' -f <(printf '%s\n' "$names") "$RECORD" || true; fi
    printf '%s\n' "$settings"
} >"$RECORD.tmp"
mv "$RECORD.tmp" "$RECORD"
