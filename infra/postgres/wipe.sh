#!/usr/bin/env bash
# Stops the cluster and deletes its directory (all databases and the log).
set -euo pipefail
# shellcheck source=infra/postgres/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

"$PG_INFRA/stop.sh"
if [[ -d "$PG_DIR" ]]; then
    rm -rf "$PG_DIR"
    pg_log "wiped $PG_DIR"
fi
rm -f "$PG_DIR.lock"
