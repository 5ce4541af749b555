# Sourced by the infra/kafka scripts: paths, ports and small helpers.
# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this

KAFKA_INFRA="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$KAFKA_INFRA/../.." && pwd)"

KAFKA_CACHE="$KAFKA_INFRA/cache"
KAFKA_LIBS="$KAFKA_CACHE/libs"
KAFKA_CLASSES="$KAFKA_CACHE/classes"

KAFKA_DIR="${CASETRAIL_KAFKA_DIR:-$REPO_ROOT/var/kafka}"
KAFKA_PORT="${CASETRAIL_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${CASETRAIL_KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_HOST=127.0.0.1
KAFKA_BOOTSTRAP="$KAFKA_HOST:$KAFKA_PORT"
KAFKA_START_TIMEOUT="${CASETRAIL_KAFKA_START_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${CASETRAIL_KAFKA_STOP_TIMEOUT:-60}"

KAFKA_PID_FILE="$KAFKA_DIR/kafka.pid"
KAFKA_LOG_DIR="$KAFKA_DIR/logs"
KAFKA_DATA_DIR="$KAFKA_DIR/data"
KAFKA_CONFIG="$KAFKA_DIR/server.properties"
KAFKA_CLUSTER_ID_FILE="$KAFKA_DIR/cluster.id"

# Serialises start/stop of one data dir (parallel make targets, test fixtures).
# The lock file sits beside the data dir so wipe can delete the dir itself.
kafka_lock() {
    mkdir -p "$(dirname "$KAFKA_DIR")"
    exec 9>"$KAFKA_DIR.lock"
    flock 9
}

kafka_log() { printf 'kafka: %s\n' "$*" >&2; }
kafka_die() { kafka_log "ERROR: $*"; exit 1; }

# Prints the pid of the broker this data dir belongs to, if it is alive.
# The command line is checked so that a recycled pid is never mistaken for it.
kafka_running_pid() {
    [[ -f "$KAFKA_PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$KAFKA_PID_FILE" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "kafka.Kafka $KAFKA_CONFIG" || return 1
    printf '%s\n' "$pid"
}

kafka_port_in_use() {
    (exec 3<>"/dev/tcp/$KAFKA_HOST/$1") 2>/dev/null
}

kafka_log_tail() {
    local f
    for f in "$KAFKA_LOG_DIR/kafka.out" "$KAFKA_LOG_DIR/server.log"; do
        if [[ -s "$f" ]]; then
            printf -- '----- last lines of %s -----\n' "$f" >&2
            tail -n 40 "$f" >&2
        fi
    done
}
