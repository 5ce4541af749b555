#!/usr/bin/env bash
# Builds kube-apiserver and kubectl of KUBE_VERSION into the tool cache (nothing when present).
# k8s.io/kubernetes is not meant to be a dependency: its go.mod points the staging modules
# (k8s.io/api, k8s.io/apiserver, ...) at ./staging. A scratch module requires it and replaces
# each staging module with the same release's published v0.x version instead.
# About 14 minutes cold on 2 cores; under a minute with Go's build cache warm.
set -euo pipefail
# shellcheck source=infra/k8s/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

apiserver="$K8S_BIN/kube-apiserver-v$KUBE_VERSION"
kubectl="$K8S_BIN/kubectl-v$KUBE_VERSION"
if [[ -x "$apiserver" && -x "$kubectl" ]]; then
    exit 0
fi
k8s_cache_lock
[[ -x "$apiserver" && -x "$kubectl" ]] && exit 0

src="$K8S_CACHE/src/kubernetes-v$KUBE_VERSION"
mkdir -p "$src" "$K8S_BIN"
cd "$src"
k8s_log "building kube-apiserver and kubectl v$KUBE_VERSION (cold: ~15 min on 2 cores)"
upstream_mod="$("$GO" mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')"
[[ -f "$upstream_mod" ]] || k8s_die "could not download k8s.io/kubernetes@v$KUBE_VERSION"
{
    printf 'module casetrail.local/kubebuild\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v%s\n\n' "$KUBE_VERSION"
    # The sample-* staging modules are never published; nothing we build needs them.
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$upstream_mod" | grep -v '/sample-' |
        while read -r module; do printf 'replace %s => %s v%s\n' "$module" "$module" "$KUBE_STAGING_VERSION"; done
} >go.mod
cat >tools.go <<'GO'
//go:build tools

package kubebuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
"$GO" mod tidy
"$GO" build -trimpath -o "$apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
"$GO" build -trimpath -o "$kubectl.tmp" k8s.io/kubernetes/cmd/kubectl
mv "$apiserver.tmp" "$apiserver"
mv "$kubectl.tmp" "$kubectl"
k8s_log "built $apiserver and $kubectl"
