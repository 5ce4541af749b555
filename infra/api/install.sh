#!/usr/bin/env bash
# Installs buf and the AsyncAPI CLI from npm into the tool cache (~/.cache/casetrail/npm-api),
# exactly as pinned by package.json and package-lock.json; does nothing when up to date.
# Prints the directory holding the executables.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${CASETRAIL_TOOLS_CACHE:-$HOME/.cache/casetrail}/npm-api"
stamp="$cache/.lock.sha256"
want="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" || ! -x "$cache/node_modules/.bin/buf" ]]; then
    if ! command -v npm >/dev/null; then
        # As infra/browser-install.sh does: make test runs this first on a fresh machine.
        [[ "$(id -u)" == 0 ]] || { echo "api: npm is missing (apt-get install npm)" >&2; exit 1; }
        echo "api: installing npm with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends npm >/dev/null
    fi
    echo "api: installing buf and the AsyncAPI CLI from npm into $cache" >&2
    mkdir -p "$cache"
    cp "$here/package.json" "$here/package-lock.json" "$cache/"
    (cd "$cache" && npm ci --no-audit --no-fund --loglevel=error >&2)
    printf '%s\n' "$want" >"$stamp"
fi
printf '%s\n' "$cache/node_modules/.bin"
