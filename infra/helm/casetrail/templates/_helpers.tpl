{{/* Names, labels and the settings every casetrail process shares. */}}

{{- define "casetrail.topology" -}}
{{- .Files.Get "topology.yaml" | fromYaml | toJson -}}
{{- end -}}

{{- define "casetrail.name" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "casetrail.kafkaCluster" -}}
{{- printf "%s-kafka" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/*
The name of a KafkaNodePool of the release's Kafka (`.pool`: nodes, brokers or controllers):
<release, cut to 5>-<hash of the release name, 10>-<n, b or c>, 18 characters at most. A pool
is a namespaced object, so its name is unique in the namespace: the release's name makes it so
(the hash, 40 bits, when two releases' names share their first characters; 24 bits were found
shared by two such names with a few thousand tries, and templates/validate.yaml refuses another
release's pool whatever the odds). Strimzi names a pool's pods <kafka>-<pool>-<node id> and puts
that name in their hostname and labels, 63 characters at most: a Kafka name of 40
(casetrail.kafkaCluster) leaves 18 beside a node id of 3 digits.
A renamed pool is a deleted one, whose pods go with it (README, "Upgrading the chart"), so a
release installed under older names keeps them: kafka.cluster.legacyPoolNames,
<kafka>-<pool> (templates/validate.yaml refuses a release name too long for them), and
kafka.cluster.barePoolNames, the plain pool, which a second release in the namespace could
not take too.
*/}}
{{- define "casetrail.kafkaPool" -}}
{{- $cluster := .root.Values.kafka.cluster -}}
{{- $release := .root.Release.Name -}}
{{- if $cluster.legacyPoolNames -}}
{{- printf "%s-%s" (include "casetrail.kafkaCluster" .root) .pool -}}
{{- else if $cluster.barePoolNames -}}
{{- .pool -}}
{{- else -}}
{{- printf "%s-%s-%s" ($release | trunc 5 | trimAll "-") (sha256sum $release | trunc 10) (.pool | trunc 1) -}}
{{- end -}}
{{- end -}}

{{/*
The release's KafkaNodePools as JSON, each `{"name": ..., "nodes": ...}`: `brokers` (the pool
`nodes` when they are the KRaft controllers too) and, with dedicatedControllers, `controllers`.
*/}}
{{- define "casetrail.kafkaPools" -}}
{{- $cluster := .Values.kafka.cluster -}}
{{- $brokers := include "casetrail.kafkaPool" (dict "root" . "pool" (ternary "brokers" "nodes" $cluster.dedicatedControllers)) -}}
{{- $pools := dict "brokers" (dict "name" $brokers "nodes" (int $cluster.brokers)) -}}
{{- if $cluster.dedicatedControllers -}}
{{- $_ := set $pools "controllers" (dict "name" (include "casetrail.kafkaPool" (dict "root" . "pool" "controllers")) "nodes" 3) -}}
{{- end -}}
{{- toJson $pools -}}
{{- end -}}

{{/*
The KafkaUser of an outside subscriber (`.root`, `.subscriber`: its name), which Strimzi's
User Operator also gives its credential Secret and, with SCRAM, its Kafka user name. Cut to
63 characters as it always was: a new name would be a new user and credential, the
subscriber's old one refused. templates/validate.yaml refuses two subscribers sharing one.
*/}}
{{- define "casetrail.subscriberUser" -}}
{{- printf "%s-subscriber-%s" .root.Release.Name .subscriber | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The name of a KafkaTopic object (`.cluster`, `.topic`); spec.topicName carries the real name.
Kubernetes names allow no underscore: it becomes "-", as it always has (a renamed object would
have Strimzi delete its topic). A topic whose name is still no valid object name (upper case,
a trailing or doubled dot or dash, too long) gets a sanitised name with a hash of the topic's,
so that two topics never share one object.
*/}}
{{- define "casetrail.kafkaTopicObject" -}}
{{- $plain := printf "%s-%s" .cluster (.topic | replace "_" "-") -}}
{{- if and (le (len $plain) 253) (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" $plain) -}}
{{- $plain -}}
{{- else -}}
{{- $sanitised := regexReplaceAll "[^a-z0-9]+" (lower $plain) "-" | trunc 240 | trimAll "-" -}}
{{- printf "%s-%s" $sanitised (sha256sum .topic | trunc 10) -}}
{{- end -}}
{{- end -}}

{{- define "casetrail.dbCluster" -}}
{{- printf "%s-db" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "casetrail.labels" -}}
app.kubernetes.io/name: casetrail
app.kubernetes.io/instance: {{ .root.Release.Name | quote }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: casetrail
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "casetrail.selectorLabels" -}}
app.kubernetes.io/name: casetrail
app.kubernetes.io/instance: {{ .root.Release.Name | quote }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every casetrail pod of this release (NetworkPolicy peers, Strimzi listener peers). */}}
{{- define "casetrail.releasePods" -}}
matchLabels:
  app.kubernetes.io/name: casetrail
  app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end -}}

{{/* By digest when one is given (a tag can be pushed again; a digest names one image). */}}
{{- define "casetrail.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/*
"true" when Kafka clients speak TLS to the brokers: mutual TLS (kafka.authentication: tls), or
SCRAM over TLS (kafka.tls.enabled, SASL_SSL). Empty otherwise (SASL over plaintext).
*/}}
{{- define "casetrail.kafkaTls" -}}
{{- if or (eq .Values.kafka.authentication "tls") .Values.kafka.tls.enabled -}}
true
{{- end -}}
{{- end -}}

{{/* The Secret with the CA that signs the brokers' certificates (key ca.crt). */}}
{{- define "casetrail.kafkaCaSecret" -}}
{{- if .Values.kafka.tls.caSecret -}}
{{- .Values.kafka.tls.caSecret -}}
{{- else if .Values.kafka.cluster.create -}}
{{- printf "%s-cluster-ca-cert" (include "casetrail.kafkaCluster" .) -}}
{{- else -}}
{{- fail "kafka.tls.caSecret: name the Secret with the outside Kafka brokers' CA (key ca.crt)" -}}
{{- end -}}
{{- end -}}

{{- define "casetrail.kafkaBootstrap" -}}
{{- if .Values.kafka.cluster.create -}}
{{- printf "%s-kafka-bootstrap:%d" (include "casetrail.kafkaCluster" .) (ternary 9093 9092 (eq (include "casetrail.kafkaTls" .) "true")) -}}
{{- else -}}
{{- required "kafka.bootstrapServers: name the Kafka cluster (host:port,...) when kafka.cluster.create is false" .Values.kafka.bootstrapServers -}}
{{- end -}}
{{- end -}}

{{- define "casetrail.dbHost" -}}
{{- if .Values.database.cluster.create -}}
{{- printf "%s-rw" (include "casetrail.dbCluster" .) -}}
{{- else -}}
{{- required "database.host: name the PostgreSQL server when database.cluster.create is false" .Values.database.host -}}
{{- end -}}
{{- end -}}

{{/*
The database's URL for libpq (CASETRAIL_PG_DSN), the one rendering for the services and the
migration Job: an IPv6 address in brackets, else libpq reads the text after its first colon as
the port. The schema keeps database.host to a hostname or an IP address and database.name to an
identifier, so no value adds a parameter (`?sslmode=disable` would override PGSSLMODE).
*/}}
{{- define "casetrail.dbUrl" -}}
{{- $host := include "casetrail.dbHost" . -}}
{{- printf "postgresql://%s:%d/%s" (ternary (printf "[%s]" $host) $host (contains ":" $host)) (int .Values.database.port) .Values.database.name -}}
{{- end -}}

{{- define "casetrail.dbCaSecret" -}}
{{- if .Values.database.tls.caSecret -}}
{{- .Values.database.tls.caSecret -}}
{{- else if .Values.database.cluster.create -}}
{{- printf "%s-ca" (include "casetrail.dbCluster" .) -}}
{{- else -}}
{{- fail "database.tls.caSecret: name the Secret with the PostgreSQL server's CA (key ca.crt)" -}}
{{- end -}}
{{- end -}}

{{/*
Seconds Kubernetes waits after SIGTERM before SIGKILL: the preStop sleep, the server's grace for
in-flight calls, the wait for the relay and consumers (topology.yaml, from casetrail_platform/hosting.py),
and a margin for closing the stores.
*/}}
{{- define "casetrail.terminationGracePeriod" -}}
{{- $topology := include "casetrail.topology" . | fromJson -}}
{{- add .Values.shutdown.preStopSleepSeconds $topology.shutdown.serverGraceSeconds $topology.shutdown.backgroundStopSeconds .Values.shutdown.closeMarginSeconds -}}
{{- end -}}

{{/*
The caseload processor's Faust --loglevel for logLevel: Faust's worker takes crit, error, warn,
info and debug only (faust/cli/base.py LOGLEVELS) and exits at every start on any other, such
as `warning`. A level missing here fails `helm template` instead.
*/}}
{{- define "casetrail.faustLogLevel" -}}
{{- $levels := dict "DEBUG" "debug" "INFO" "info" "WARNING" "warn" "ERROR" "error" -}}
{{- required (printf "logLevel %s has no Faust --loglevel (casetrail.faustLogLevel)" .Values.logLevel) (get $levels .Values.logLevel) -}}
{{- end -}}

{{/*
A storage size, quoted: a quantity as given ("10Gi", "100"), a number of bytes in whole digits.
Printed as it is, a number of a million or more comes out as 1e+06, which no quantity parser
takes, and a number where the operators' resources want a string is refused.
*/}}
{{- define "casetrail.quantity" -}}
{{- if kindIs "string" . -}}
{{- quote . -}}
{{- else -}}
{{- int64 . | quote -}}
{{- end -}}
{{- end -}}

{{/*
Environment of a process that uses the database and Kafka; `.kafkaUser` names its KafkaUser.
`.caseload`: the caseload processor, which reads neither the log level (Faust's --loglevel
argument) nor the data dir (CASETRAIL_CASELOAD_DATA_DIR): services/caseload/settings.py.
Variables marked "anticipated" are read by code other issues add (see the chart's README).
*/}}
{{- define "casetrail.env" -}}
{{- $root := .root -}}
{{- $values := $root.Values -}}
{{- if not .caseload }}
- name: CASETRAIL_LOG_LEVEL
  value: {{ $values.logLevel | quote }}
- name: CASETRAIL_DATA_DIR
  value: /var/lib/casetrail
{{- end }}
- name: CASETRAIL_KAFKA_BOOTSTRAP
  value: {{ include "casetrail.kafkaBootstrap" $root | quote }}
- name: CASETRAIL_CASE_EVENTS_TOPIC
  value: {{ $values.kafka.caseEventsTopic | quote }}
# What a process creates when it reaches the brokers before the Topic Operator (or, with an
# outside cluster, before the topics' owners): the same partitions and replication as the
# KafkaTopics (casetrail_platform/bus/topics.py TopicSettings.from_env).
- name: CASETRAIL_CASE_EVENTS_PARTITIONS
  value: {{ $values.kafka.caseEventsPartitions | quote }}
- name: CASETRAIL_DEAD_LETTER_PARTITIONS
  value: {{ $values.kafka.deadLetterPartitions | quote }}
- name: CASETRAIL_KAFKA_REPLICATION_FACTOR
  value: {{ $values.kafka.replicationFactor | quote }}
- name: CASETRAIL_KAFKA_MIN_INSYNC_REPLICAS
  value: {{ $values.kafka.minInsyncReplicas | quote }}
- name: CASETRAIL_KAFKA_FETCH_MAX_WAIT_MS
  value: {{ $values.kafka.fetchMaxWaitMs | quote }}
{{- if eq $values.kafka.authentication "tls" }}
# Kafka client TLS (mutual) with the KafkaUser's certificate
# (casetrail_platform/bus/kafka_security.py)
- name: CASETRAIL_KAFKA_SECURITY_PROTOCOL
  value: SSL
- name: CASETRAIL_KAFKA_SSL_CAFILE
  value: /etc/casetrail/kafka-ca/ca.crt
- name: CASETRAIL_KAFKA_SSL_CERTFILE
  value: /etc/casetrail/kafka-user/user.crt
- name: CASETRAIL_KAFKA_SSL_KEYFILE
  value: /etc/casetrail/kafka-user/user.key
{{- else }}
# Kafka client SASL/SCRAM with the KafkaUser's password (casetrail_platform/bus/kafka_security.py),
# over TLS with kafka.tls.enabled.
{{- if $values.kafka.tls.enabled }}
- name: CASETRAIL_KAFKA_SECURITY_PROTOCOL
  value: SASL_SSL
- name: CASETRAIL_KAFKA_SSL_CAFILE
  value: /etc/casetrail/kafka-ca/ca.crt
{{- else }}
- name: CASETRAIL_KAFKA_SECURITY_PROTOCOL
  value: SASL_PLAINTEXT
{{- end }}
- name: CASETRAIL_KAFKA_SASL_MECHANISM
  value: SCRAM-SHA-512
- name: CASETRAIL_KAFKA_SASL_USERNAME
  value: {{ .kafkaUser | quote }}
# The KafkaUser's password as a file, never a variable (casetrail_platform/bus/kafka_security.py).
- name: CASETRAIL_KAFKA_SASL_PASSWORD_FILE
  value: /etc/casetrail/kafka-user/password
{{- end }}
{{- if .database }}
- name: CASETRAIL_PG_DSN
  value: {{ include "casetrail.dbUrl" $root | quote }}
- name: PGUSER
  valueFrom:
    secretKeyRef: {name: {{ $values.secrets.database | quote }}, key: username}
# The password as a file, never a variable (casetrail_platform/store/pg_password.py).
- name: CASETRAIL_PG_PASSWORD_FILE
  value: /etc/casetrail/database/password
{{- if $values.database.tls.enabled }}
- name: PGSSLMODE
  value: verify-full
- name: PGSSLROOTCERT
  value: /etc/casetrail/postgres-ca/ca.crt
{{- else }}
- name: PGSSLMODE
  value: prefer
{{- end }}
{{- end }}
{{- with $values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Volumes matching casetrail.env's files; `.kafkaUser` and `.database` as there. */}}
{{- define "casetrail.volumes" -}}
{{- $values := .root.Values -}}
- name: data
  emptyDir: {sizeLimit: {{ $values.scratch.dataSizeLimit }}}
- name: tmp
  emptyDir: {sizeLimit: {{ $values.scratch.tmpSizeLimit }}}
{{- if eq $values.kafka.authentication "tls" }}
# user.key is the KafkaUser's private key: owner-read only, like the signing key and the KEK
# (with the pod's fsGroup, kubelet makes it group-readable for the container's user).
- name: kafka-user
  secret: {secretName: {{ .kafkaUser | quote }}, defaultMode: 0400}
{{- else }}
# The KafkaUser's SCRAM password, owner-read only like the private keys.
- name: kafka-user
  secret:
    secretName: {{ .kafkaUser | quote }}
    defaultMode: 0400
    items:
      - {key: password, path: password}
{{- end }}
{{- if include "casetrail.kafkaTls" .root }}
{{- include "casetrail.caVolume" (dict "name" "kafka-ca" "secret" (include "casetrail.kafkaCaSecret" .root)) | nindent 0 }}
{{- end }}
{{- if .database }}
{{- include "casetrail.databasePasswordVolume" .root }}
{{- end }}
{{- if and .database $values.database.tls.enabled }}
{{- include "casetrail.caVolume" (dict "name" "postgres-ca" "secret" (include "casetrail.dbCaSecret" .root)) | nindent 0 }}
{{- end }}
{{- end -}}

{{/* The database owner's password (secrets.database, key password), owner-read only. */}}
{{- define "casetrail.databasePasswordVolume" }}
- name: database-password
  secret:
    secretName: {{ .Values.secrets.database | quote }}
    defaultMode: 0400
    items:
      - {key: password, path: password}
{{- end -}}

{{/*
A CA certificate from a Secret (`.name`: the volume, `.secret`: the Secret), ca.crt alone and
read-only: a CA's Secret may also hold its private key (CloudNativePG's <cluster>-ca has ca.key,
which signs the server's and the replication user's certificates; a cert-manager Secret has
tls.key), which no pod of ours may read.
*/}}
{{- define "casetrail.caVolume" -}}
- name: {{ .name }}
  secret:
    secretName: {{ .secret | quote }}
    defaultMode: 0444
    items:
      - {key: ca.crt, path: ca.crt}
{{- end -}}

{{/* The gRPC TLS Secret (tls.key: the server's or client's private key, hence 0400). */}}
{{- define "casetrail.grpcTlsVolume" -}}
- name: grpc-tls
  secret: {secretName: {{ .Values.grpcTls.secret | quote }}, defaultMode: 0400}
{{- end -}}

{{- define "casetrail.volumeMounts" -}}
{{- $values := .root.Values -}}
- {name: data, mountPath: /var/lib/casetrail}
- {name: tmp, mountPath: /tmp}
- {name: kafka-user, mountPath: /etc/casetrail/kafka-user, readOnly: true}
{{- if include "casetrail.kafkaTls" .root }}
- {name: kafka-ca, mountPath: /etc/casetrail/kafka-ca, readOnly: true}
{{- end }}
{{- if .database }}
- {name: database-password, mountPath: /etc/casetrail/database, readOnly: true}
{{- end }}
{{- if and .database $values.database.tls.enabled }}
- {name: postgres-ca, mountPath: /etc/casetrail/postgres-ca, readOnly: true}
{{- end }}
{{- end -}}

{{- define "casetrail.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/*
The pods Strimzi runs for the release (brokers, controllers, entity operator), held to Pod Security
"restricted" as ours are: the operator's default (baseline) provider leaves their containers'
privileges open. fsGroup 0 keeps the volumes writable by the images' user (1001, group 0), as the
baseline provider sets it.
*/}}
{{- define "casetrail.strimziPodSecurityContext" -}}
runAsNonRoot: true
fsGroup: 0
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/*
The template of a KafkaNodePool's pods (`.pool`, its name): Strimzi takes a pool's template in
place of the Kafka resource's, so the whole of it is here, once for every pool. With
topologySpread, as the PostgreSQL instances and the services' replicas: the pool's nodes on
different nodes (required: three brokers on one node lose every replica of a partition with it),
and over zones as a preference (a lost zone must not leave a node unschedulable); the Kafka
resource's rack makes each broker's broker.rack its zone, so a partition's replicas go to
different zones.
*/}}
{{- define "casetrail.kafkaNodeTemplate" -}}
{{- $root := .root -}}
{{- $spread := $root.Values.topologySpread -}}
pod:
  securityContext:
    {{- include "casetrail.strimziPodSecurityContext" $root | nindent 4 }}
  {{- include "casetrail.strimziScheduling" $root | nindent 2 }}
  {{- if or $root.Values.nodeSelector $spread }}
  affinity:
    {{- include "casetrail.strimziNodeAffinity" $root | nindent 4 }}
    {{- if $spread }}
    {{- $pool := dict "strimzi.io/cluster" (include "casetrail.kafkaCluster" $root) "strimzi.io/pool-name" .pool }}
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- toYaml $pool | nindent 14 }}
    {{- end }}
  {{- end }}
  {{- if $spread }}
  {{- $pool := dict "strimzi.io/cluster" (include "casetrail.kafkaCluster" $root) "strimzi.io/pool-name" .pool }}
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: topology.kubernetes.io/zone
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- toYaml $pool | nindent 10 }}
  {{- end }}
kafkaContainer:
  securityContext:
    {{- include "casetrail.containerSecurityContext" $root | nindent 4 }}
initContainer:
  securityContext:
    {{- include "casetrail.containerSecurityContext" $root | nindent 4 }}
{{- end -}}

{{/*
The nodes a pod the Strimzi operator runs may go to (`nodeSelector`, `tolerations`, as every
other pod of the release): its pod template has no nodeSelector, so the same rule is a required
node affinity (nothing without a nodeSelector), and the tolerations (nothing without any).
*/}}
{{- define "casetrail.strimziNodeAffinity" -}}
{{- with .Values.nodeSelector }}
nodeAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    nodeSelectorTerms:
      - matchExpressions:
          {{- range $key, $value := . }}
          - {key: {{ $key | quote }}, operator: In, values: [{{ $value | quote }}]}
          {{- end }}
{{- end }}
{{- end -}}

{{- define "casetrail.strimziScheduling" -}}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "casetrail.podScheduling" -}}
{{- $values := .root.Values -}}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $values.topologySpread }}
# Replicas on different nodes, required: with a preference only, the scheduler may put every
# replica on one node, which then takes the service down with it. Zones are a preference: a lost
# zone must not leave replicas unschedulable. pod-template-hash spreads the new ReplicaSet of a
# rolling update by itself (ignored for the migration Job's pods, which have none).
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: DoNotSchedule
    matchLabelKeys: [pod-template-hash]
    labelSelector:
      matchLabels:
        {{- include "casetrail.selectorLabels" . | nindent 8 }}
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    matchLabelKeys: [pod-template-hash]
    labelSelector:
      matchLabels:
        {{- include "casetrail.selectorLabels" . | nindent 8 }}
{{- end }}
{{- end -}}
