#!/usr/bin/env bash
# Stops the broker: SIGTERM (controlled shutdown, logs flushed), then SIGKILL
# if it has not exited within CASETRAIL_KAFKA_STOP_TIMEOUT seconds (60).
set -euo pipefail
# shellcheck source=infra/kafka/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
kafka_lock

if ! pid="$(kafka_running_pid)"; then
    rm -f "$KAFKA_PID_FILE"
    kafka_log "not running"
    exit 0
fi

kill -TERM "$pid" 2>/dev/null || true
for ((i = 0; i < KAFKA_STOP_TIMEOUT * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
    kafka_log "pid $pid still alive after ${KAFKA_STOP_TIMEOUT}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
fi
rm -f "$KAFKA_PID_FILE"
kafka_log "stopped (pid $pid)"
