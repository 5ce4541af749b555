# Sourced by the infra/k8s scripts: versions, the tool cache and small helpers.
# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this

K8S_INFRA="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$K8S_INFRA/../.." && pwd)"

# Tools are built once per machine, outside any clone, so every worktree and CI run on this
# machine reuses them; a fresh machine builds them from the registries.
K8S_CACHE="${CASETRAIL_TOOLS_CACHE:-$HOME/.cache/casetrail}"
K8S_BIN="$K8S_CACHE/bin"

# One place for every pinned version. Bumping one rebuilds only that tool (names carry it).
KUBE_VERSION=1.37.2            # kube-apiserver, kubectl; also helm's --kube-version and kubeconform's schemas
KUBE_STAGING_VERSION=0.37.2    # the published k8s.io/* staging modules of that release
HELM_VERSION=3.22.0
KUBECONFORM_VERSION=0.8.0
KUBERNETES_VALIDATE_VERSION=1.37.0
CNPG_VERSION=1.30.1
KEDA_VERSION=2.21.0
STRIMZI_VERSION=1.2.0
PROMETHEUS_OPERATOR_VERSION=0.85.0   # its PodMonitor and PrometheusRule CRDs (metrics.*)
# The operators' CRDs cache directory (tests/k8s/tools.py builds the same name); "-rules" since
# it holds the PrometheusRule CRD too, so a cache made before is not taken for this one.
CRDS_NAME="strimzi-$STRIMZI_VERSION-cnpg-$CNPG_VERSION-keda-$KEDA_VERSION-prometheus-operator-$PROMETHEUS_OPERATOR_VERSION-rules"

GO="${CASETRAIL_GO:-$(command -v go || echo /usr/local/go/bin/go)}"

k8s_log() { printf 'k8s: %s\n' "$*" >&2; }
k8s_die() { k8s_log "ERROR: $*"; exit 1; }

# Serialises builds into the shared cache (two worktrees running make k8s-check at once).
k8s_cache_lock() {
    mkdir -p "$K8S_CACHE"
    exec 8>"$K8S_CACHE/.lock"
    flock 8
}
# The project's venv (make venv): schemas.py needs PyYAML from requirements.lock.
PY="${CASETRAIL_PYTHON:-$REPO_ROOT/.venv/bin/python}"
