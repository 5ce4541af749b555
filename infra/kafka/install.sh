#!/usr/bin/env bash
# Fetches the Kafka broker jars from Maven Central into infra/kafka/cache/libs
# and compiles the readiness probe. Does nothing when both are up to date.
set -euo pipefail
# shellcheck source=infra/kafka/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ensure_tools() {
    local missing=()
    command -v java >/dev/null || missing+=(openjdk-17-jdk-headless)
    command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
    command -v mvn >/dev/null || missing+=(maven)
    ((${#missing[@]} == 0)) && return 0
    [[ "$(id -u)" == 0 ]] || kafka_die "missing ${missing[*]}; install them (apt-get install ${missing[*]})"
    kafka_log "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The stamp holds the pom's checksum, so editing the pom (e.g. a version bump)
# re-fetches instead of leaving a stale or mixed classpath.
fetch_libs() {
    local want stamp="$KAFKA_LIBS/.pom.sha256"
    want="$(sha256sum "$KAFKA_INFRA/pom.xml" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    kafka_log "fetching broker jars from Maven Central"
    rm -rf "$KAFKA_LIBS.tmp"
    # mvn's output goes to a file (it is noisy even with -q); shown on failure.
    if ! mvn -q -B -Dstyle.color=never -f "$KAFKA_INFRA/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS.tmp" >"$KAFKA_CACHE/mvn.log" 2>&1; then
        tail -n 40 "$KAFKA_CACHE/mvn.log" >&2
        kafka_die "mvn could not resolve the broker jars (full output in $KAFKA_CACHE/mvn.log)"
    fi
    # Swap in whole so an interrupted fetch never leaves a half classpath.
    rm -rf "$KAFKA_LIBS"
    mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
    printf '%s\n' "$want" >"$stamp"
}

compile_probe() {
    local src="$KAFKA_INFRA/ReadyCheck.java" cls="$KAFKA_CLASSES/ReadyCheck.class"
    if [[ -f "$cls" && "$cls" -nt "$src" && "$cls" -nt "$KAFKA_LIBS/.pom.sha256" ]]; then
        return 0
    fi
    mkdir -p "$KAFKA_CLASSES"
    javac -nowarn -d "$KAFKA_CLASSES" -cp "$KAFKA_LIBS/*" "$src"
}

mkdir -p "$KAFKA_CACHE"
ensure_tools
fetch_libs
compile_probe
if [[ "${1:-}" != --quiet ]]; then
    kafka_log "installed: $(find "$KAFKA_LIBS" -name 'kafka_2.13-*.jar' -printf '%f\n') in $KAFKA_LIBS"
fi
