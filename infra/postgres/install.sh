#!/usr/bin/env bash
# Installs Debian's PostgreSQL server binaries when they are missing.
# Does nothing (and needs no network) when they are already there.
set -euo pipefail
# shellcheck source=infra/postgres/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if ! bin="$(pg_find_bin)"; then
    [[ "$(id -u)" == 0 ]] || pg_die "PostgreSQL server is not installed; run as root or: apt-get install postgresql"
    pg_log "installing Debian's postgresql package"
    # Our clusters live in the repo; the package's default cluster on 5432
    # would only be a second server eating memory.
    mkdir -p /etc/postgresql-common/createcluster.d
    printf 'create_main_cluster = false\n' >/etc/postgresql-common/createcluster.d/casetrail.conf
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    bin="$(pg_find_bin)" || pg_die "postgresql installed but no initdb under /usr/lib/postgresql/*/bin"
fi
if [[ "$(id -u)" == 0 ]] && ! id "$PG_OS_USER" >/dev/null 2>&1; then
    pg_die "OS user '$PG_OS_USER' is missing (the postgresql package creates it)"
fi
if [[ "${1:-}" != --quiet ]]; then
    pg_log "installed: $("$bin/postgres" --version) in $bin"
fi
