#!/usr/bin/env bash
# Installs what make k8s-check needs into the tool cache (~/.cache/casetrail by default);
# each step does nothing when its result is already there. Steps (default: all):
#   helm kubeconform promtool kube etcd core-schemas crds
set -euo pipefail
# shellcheck source=infra/k8s/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

go_tool() {  # go_tool NAME MODULE_PATH VERSION: go install into the cache, named with its version
    local name="$1" package="$2" version="$3" target="$K8S_BIN/$1-v$3"
    [[ -x "$target" ]] && return 0
    k8s_log "building $name v$version with go install"
    local gobin
    gobin="$(mktemp -d "$K8S_CACHE/gobin.XXXXXX")"
    GOBIN="$gobin" "$GO" install "$package@v$version"
    mv "$gobin/$name" "$target"
    rmdir "$gobin"
}

step_helm() { go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"; }
step_kubeconform() { go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"; }
# promtool from Debian's prometheus package, unpacked into the cache: no server is installed or
# started, and no root is needed (built from Prometheus's Go module it cost ~7 CPU-minutes cold).
step_promtool() {
    local target="$K8S_BIN/promtool-deb"
    [[ -x "$target" ]] && return 0
    k8s_log "fetching promtool from Debian's prometheus package"
    local work
    work="$(mktemp -d "$K8S_CACHE/promtool.XXXXXX")"
    if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
        [[ "$(id -u)" == 0 ]] || k8s_die "apt-get download prometheus failed (no package lists? run apt-get update)"
        apt-get update -qq >/dev/null
        (cd "$work" && apt-get download prometheus >/dev/null)
    fi
    dpkg-deb -x "$work"/prometheus_*.deb "$work/unpacked"
    mv "$work/unpacked/usr/bin/promtool" "$target"
    rm -rf "$work"
}
step_kube() { "$K8S_INFRA/build-kube.sh"; }

step_etcd() {
    command -v etcd >/dev/null && return 0
    [[ "$(id -u)" == 0 ]] || k8s_die "etcd is missing; install Debian's etcd-server (apt-get install etcd-server)"
    k8s_log "installing Debian's etcd-server with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
    # The package starts a system etcd on the default ports; ours runs on its own ports.
    systemctl disable --now etcd >/dev/null 2>&1 || true
}

# Kubernetes' own schemas, from the kubernetes-validate wheel on PyPI, made usable offline.
step_core_schemas() {
    local target="$K8S_CACHE/schemas/kubernetes-v$KUBE_VERSION"
    [[ -f "$target/.done" ]] && return 0
    k8s_log "fetching Kubernetes JSON schemas (kubernetes-validate $KUBERNETES_VALIDATE_VERSION from PyPI)"
    local tmp
    tmp="$(mktemp -d "$K8S_CACHE/wheel.XXXXXX")"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" -d "$tmp"
    "$PY" "$K8S_INFRA/schemas.py" core "$tmp"/kubernetes_validate-*.whl "$KUBE_VERSION" "$target"
    rm -rf "$tmp"
    touch "$target/.done"
}

java_21() {  # prints a java of version 21 or newer
    local java version
    for java in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} java /usr/lib/jvm/*/bin/java; do
        command -v "$java" >/dev/null || continue
        version="$("$java" -XshowSettings:properties -version 2>&1 | sed -n 's/^\s*java.specification.version = //p')"
        if [[ "$version" =~ ^[0-9]+$ ]] && ((version >= 21)); then
            command -v "$java"
            return 0
        fi
    done
    return 1
}

ensure_java_21() {
    java_21 && return 0
    [[ "$(id -u)" == 0 ]] || k8s_die "Strimzi's CRD generator needs Java 21+; install openjdk-21-jdk-headless"
    k8s_log "installing openjdk-21-jdk-headless with apt-get (Strimzi's CRD generator needs Java 21+)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends openjdk-21-jdk-headless >/dev/null ||
        k8s_die "no Java 21+ here and apt has none (Debian 13 has openjdk-21); install one and set JAVA_HOME"
    java_21
}

# Strimzi: generated from its Maven artifacts, like its own build does.
strimzi_crds() {
    local target="$1" libs="$K8S_CACHE/strimzi-$STRIMZI_VERSION/libs" java
    if [[ ! -f "$libs/.done" ]]; then
        k8s_log "fetching Strimzi $STRIMZI_VERSION api and crd-generator from Maven Central"
        if ! command -v mvn >/dev/null; then
            [[ "$(id -u)" == 0 ]] || k8s_die "Maven is missing; install it (apt-get install maven)"
            k8s_log "installing maven with apt-get"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends maven >/dev/null
        fi
        rm -rf "$libs"
        mvn -q -B -Dstyle.color=never -f "$K8S_INFRA/strimzi/pom.xml" -Dstrimzi.version="$STRIMZI_VERSION" \
            dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs" \
            >"$K8S_CACHE/strimzi-mvn.log" 2>&1 || {
            tail -n 30 "$K8S_CACHE/strimzi-mvn.log" >&2
            k8s_die "mvn could not resolve Strimzi's artifacts"
        }
        touch "$libs/.done"
    fi
    java="$(ensure_java_21)"
    local model=io.strimzi.api.kafka.model args=() kind
    for kind in kafka.Kafka nodepool.KafkaNodePool topic.KafkaTopic user.KafkaUser podset.StrimziPodSet \
        connect.KafkaConnect connector.KafkaConnector bridge.KafkaBridge \
        mirrormaker2.KafkaMirrorMaker2 rebalance.KafkaRebalance; do
        args+=("$model.$kind=$target/${kind#*.}.yaml")
    done
    "$java" -cp "$libs/*" io.strimzi.crdgenerator.CrdGenerator \
        --label app:strimzi --label strimzi.io/crd-install:true --target-kube 1.16+ \
        --crd-api-version v1 --api-versions v1 --storage-version v1 --yaml "${args[@]}" \
        >"$K8S_CACHE/strimzi-crdgen.log" 2>&1 || {
        tail -n 30 "$K8S_CACHE/strimzi-crdgen.log" >&2
        k8s_die "Strimzi's CRD generator failed"
    }
}

go_module_crds() {  # go_module_crds MODULE VERSION TARGET [GLOB]: the module's CRDs at GLOB
    local dir glob="${4:-config/crd/bases/*.yaml}"
    dir="$("$GO" mod download -json "$1@v$2" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')"
    compgen -G "$dir/$glob" >/dev/null || k8s_die "$1@v$2 has no $glob"
    cp "$dir"/$glob "$3/"
    chmod u+w "$3"/*.yaml
}

# The operators' CustomResourceDefinitions, and kubeconform schemas generated from them.
step_crds() {
    local target="$K8S_CACHE/crds/$CRDS_NAME"
    [[ -f "$target/.done" ]] && return 0
    rm -rf "$target"
    mkdir -p "$target/strimzi" "$target/cloudnative-pg" "$target/keda" "$target/prometheus-operator"
    k8s_log "fetching CloudNativePG $CNPG_VERSION, KEDA $KEDA_VERSION and Prometheus Operator $PROMETHEUS_OPERATOR_VERSION CRDs (Go module proxy)"
    go_module_crds github.com/cloudnative-pg/cloudnative-pg "$CNPG_VERSION" "$target/cloudnative-pg"
    go_module_crds github.com/kedacore/keda/v2 "$KEDA_VERSION" "$target/keda"
    # Only the PodMonitor and the PrometheusRule: the chart renders no other monitoring.coreos.com kind.
    local kind
    for kind in podmonitors prometheusrules; do
        go_module_crds github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION" \
            "$target/prometheus-operator" "example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml"
    done
    strimzi_crds "$target/strimzi"
    "$PY" "$K8S_INFRA/schemas.py" crds "$target/schemas" "$target"/*/*.yaml
    touch "$target/.done"
}

mkdir -p "$K8S_BIN"
steps=("$@")
((${#steps[@]})) || steps=(helm kubeconform promtool etcd core-schemas crds kube)
for step in "${steps[@]}"; do
    "step_${step//-/_}"
done
