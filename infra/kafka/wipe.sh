#!/usr/bin/env bash
# Stops the broker and deletes its data dir (topics, offsets, cluster id, logs).
# The downloaded jars in infra/kafka/cache are kept.
set -euo pipefail
# shellcheck source=infra/kafka/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

"$KAFKA_INFRA/stop.sh"
if [[ -d "$KAFKA_DIR" ]]; then
    rm -rf "$KAFKA_DIR"
    kafka_log "wiped $KAFKA_DIR"
fi
rm -f "$KAFKA_DIR.lock"
