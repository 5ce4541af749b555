# Sourced by the infra/postgres scripts: paths, port, and running commands as
# the cluster's OS user.
# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this

PG_INFRA="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$PG_INFRA/../.." && pwd)"

PG_PORT="${CASETRAIL_PG_PORT:-15432}"
PG_HOST=127.0.0.1
PG_DB=casetrail
PG_ROLE=casetrail
PG_SUPERUSER=postgres
PG_STOP_TIMEOUT="${CASETRAIL_PG_STOP_TIMEOUT:-60}"

# Serialises start/stop of one cluster (parallel make targets, test fixtures).
# The lock file sits beside the cluster dir so wipe can delete the dir itself.
pg_lock() {
    mkdir -p "$(dirname "$PG_DIR")"
    exec 9>"$PG_DIR.lock"
    flock 9
}

pg_log() { printf 'postgres: %s\n' "$*" >&2; }
pg_die() { pg_log "ERROR: $*"; exit 1; }

# PostgreSQL refuses to run as root, so as root the cluster belongs to the
# Debian package's `postgres` user; anyone else runs it as themselves.
if [[ "$(id -u)" == 0 ]]; then
    PG_OS_USER=postgres
else
    PG_OS_USER="$(id -un)"
fi

as_pg() {
    # cd /: the caller's working directory may be closed to the postgres user.
    if [[ "$(id -u)" == 0 ]]; then
        (cd / && runuser -u "$PG_OS_USER" -- "$@")
    else
        (cd / && "$@")
    fi
}

# Prefer 15 (what Debian 12 ships and what we test with), else the newest installed.
pg_find_bin() {
    if [[ -n "${CASETRAIL_PG_BIN:-}" ]]; then
        printf '%s\n' "$CASETRAIL_PG_BIN"
        return 0
    fi
    if [[ -x /usr/lib/postgresql/15/bin/initdb ]]; then
        printf '%s\n' /usr/lib/postgresql/15/bin
        return 0
    fi
    local d
    d="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$d" ]] || return 1
    dirname "$d"
}

# True when the cluster user can reach $1: every existing ancestor must be
# searchable by it (a repo under /root, or a 0700 home, is not).
pg_reachable() {
    local d="$1"
    while [[ ! -e "$d" ]]; do d="$(dirname "$d")"; done
    [[ "$(id -u)" != 0 ]] && return 0
    id "$PG_OS_USER" >/dev/null 2>&1 || return 0
    runuser -u "$PG_OS_USER" -- test -x "$d" 2>/dev/null
}

pg_resolve_dir() {
    if [[ -n "${CASETRAIL_PG_DIR:-}" ]]; then
        printf '%s\n' "$CASETRAIL_PG_DIR"
        return 0
    fi
    local default="$REPO_ROOT/var/postgres"
    if pg_reachable "$default"; then
        printf '%s\n' "$default"
        return 0
    fi
    # One dir per checkout, so two clones never share a cluster.
    printf '/var/lib/postgresql/casetrail-%s\n' "$(printf '%s' "$REPO_ROOT" | sha1sum | cut -c1-12)"
}

PG_DIR="$(pg_resolve_dir)"
PG_DATA="$PG_DIR/data"
PG_LOGFILE="$PG_DIR/postgres.log"
PG_DSN="postgresql://$PG_SUPERUSER@$PG_HOST:$PG_PORT/$PG_DB"

# Prints the PID of the postmaster of the cluster in $PG_DATA; status 1 when none runs.
# postmaster.pid's first line alone does not tell (it is what `pg_ctl status` checks): after a
# hard kill of the postmaster (OOM kill, container stop) its PID may be reused by any process of
# the cluster's OS user, which start.sh then took for the server (and never started it) and
# stop.sh sent SIGINT. The PID is ours only if it runs `postgres` for this data dir (the Kafka
# scripts check their broker alike, kafka_running_pid): the -D pg_ctl started it with, else the
# dir it works in. Another OS user may read any process's command line, but not its cwd without
# CAP_SYS_PTRACE (root in a container by default): that one is read as the cluster's user, and
# a `postgres` process whose dir nobody can read counts as ours, since removing a live
# cluster's postmaster.pid makes it shut itself down.
pg_postmaster_pid() {
    local pid program given data cwd
    [[ -f "$PG_DATA/postmaster.pid" ]] || return 1
    pid="$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    program="$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n 1)"
    [[ "$(basename -- "$program")" == postgres ]] || return 1
    data="$(readlink -f -- "$PG_DATA")"
    given="$(tr '\0' '\n' <"/proc/$pid/cmdline" | sed -n '/^-D$/{n;p;q;}')"
    if [[ -n "$given" ]]; then
        [[ "$(readlink -f -- "$given")" == "$data" ]] || return 1
    else
        cwd="$(readlink -f -- "/proc/$pid/cwd" 2>/dev/null ||
            as_pg readlink -f -- "/proc/$pid/cwd" 2>/dev/null || true)"
        [[ -z "$cwd" || "$cwd" == "$data" ]] || return 1
    fi
    printf '%s\n' "$pid"
}

pg_running() {
    pg_postmaster_pid >/dev/null
}

# Under pg_lock, when the cluster is not running: a postmaster.pid left by a postmaster that
# died hard is removed, so that pg_ctl neither starts against nor signals the PID it names
# (the postmaster refuses to start while that PID lives). Orphaned backends of the dead one are
# still refused by the postmaster itself: they hold the data dir's shared memory.
pg_remove_stale_pid_file() {
    [[ -f "$PG_DATA/postmaster.pid" ]] || return 0
    local pid
    pid="$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)"
    pg_log "removing stale $PG_DATA/postmaster.pid (PID ${pid:-?} is not this cluster's postmaster)"
    rm -f -- "$PG_DATA/postmaster.pid"
}

pg_port_in_use() {
    (exec 3<>"/dev/tcp/$PG_HOST/$1") 2>/dev/null
}

pg_log_tail() {
    if [[ -s "$PG_LOGFILE" ]]; then
        printf -- '----- last lines of %s -----\n' "$PG_LOGFILE" >&2
        tail -n 30 "$PG_LOGFILE" >&2
    fi
}
