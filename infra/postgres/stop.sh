#!/usr/bin/env bash
# Stops the cluster: fast shutdown (sessions ended, checkpoint written), then
# immediate shutdown if it has not finished within CASETRAIL_PG_STOP_TIMEOUT (60 s).
set -euo pipefail
# shellcheck source=infra/postgres/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
pg_lock

if ! pg_running; then
    pg_remove_stale_pid_file
    pg_log "not running"
    exit 0
fi
PG_BIN="$(pg_find_bin)"
if ! as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t "$PG_STOP_TIMEOUT" -s; then
    pg_log "fast shutdown timed out, using immediate shutdown (crash recovery on next start)"
    as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m immediate -w -t 30 -s
fi
pg_log "stopped"
