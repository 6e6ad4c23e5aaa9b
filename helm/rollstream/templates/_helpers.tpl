{{/*
Shared pieces. Every stage's template file is one call to "rollstream.stage"; the pod spec,
environment, volumes and probes are built here so the seven stages cannot drift apart.
*/}}

{{- define "rollstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "rollstream.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rollstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rollstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rollstream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 }}
{{ include "rollstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rollstream
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one stage's objects: (dict "root" $ "stage" "feed") */}}
{{- define "rollstream.stageLabels" -}}
{{ include "rollstream.labels" .root }}
app.kubernetes.io/component: {{ .stage }}
{{- end }}

{{- define "rollstream.stageSelector" -}}
{{ include "rollstream.selectorLabels" .root }}
app.kubernetes.io/component: {{ .stage }}
{{- end }}

{{- define "rollstream.stageName" -}}
{{- printf "%s-%s" (include "rollstream.fullname" .root) .stage | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "rollstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rollstream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
What the code fixes per stage: the workload kind, the consumer group and input topic KEDA
scales on (groups are prefixed "<namespace>." like topics), and which stages read or write the
weight store. Groups: generator and the feed's probe use "generator"; faust apps are
"rollstream-<stage>"; replay and learner use their stage name.
*/}}
{{- define "rollstream.stageFacts" -}}
feed: {kind: Deployment, group: "", topic: "", weights: false}
generator: {kind: Deployment, group: generator, topic: prompts, weights: true}
scorer: {kind: Deployment, group: rollstream-scorer, topic: rollouts.raw, weights: false}
filter: {kind: Deployment, group: rollstream-filter, topic: rollouts.scored, weights: false}
replay: {kind: StatefulSet, group: replay, topic: groups.kept, weights: false}
learner: {kind: StatefulSet, group: learner, topic: batches.train, weights: true}
evaluator: {kind: Deployment, group: "", topic: "", weights: true}
{{- end }}

{{- define "rollstream.stages" -}}
[feed, generator, scorer, filter, replay, learner, evaluator]
{{- end }}

{{/* A topic or group name under the optional namespace: (dict "root" $ "name" "prompts") */}}
{{- define "rollstream.qualified" -}}
{{- if .root.Values.kafka.namespace }}
{{- printf "%s.%s" .root.Values.kafka.namespace .name }}
{{- else }}
{{- .name }}
{{- end }}
{{- end }}

{{- define "rollstream.image" -}}
{{- $g := .root.Values.image }}
{{- $s := .image }}
{{- $repo := default $g.repository $s.repository }}
{{- $tag := default (default .root.Chart.AppVersion $g.tag) $s.tag }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{- define "rollstream.autoscaled" -}}
{{- $s := index .root.Values .stage }}
{{- if and .root.Values.keda.enabled $s.autoscaling.enabled }}true{{ end }}
{{- end }}

{{/* Non-secret librdkafka security settings, from kafka.sasl / kafka.tls / kafka.security. */}}
{{- define "rollstream.kafkaSecurity" -}}
{{- $k := .Values.kafka }}
{{- $sec := dict }}
{{- if and $k.sasl.enabled $k.tls.enabled }}
{{- $_ := set $sec "security.protocol" "SASL_SSL" }}
{{- else if $k.sasl.enabled }}
{{- $_ := set $sec "security.protocol" "SASL_PLAINTEXT" }}
{{- else if $k.tls.enabled }}
{{- $_ := set $sec "security.protocol" "SSL" }}
{{- end }}
{{- if $k.sasl.enabled }}
{{- $_ := set $sec "sasl.mechanism" $k.sasl.mechanism }}
{{- end }}
{{- if and $k.tls.enabled $k.tls.caSecret }}
{{- $_ := set $sec "ssl.ca.location" (printf "/etc/kafka-ca/%s" $k.tls.caKey) }}
{{- end }}
{{- if and $k.tls.enabled $k.tls.clientSecret }}
{{- $_ := set $sec "ssl.certificate.location" (printf "/etc/kafka-client/%s" $k.tls.certKey) }}
{{- $_ := set $sec "ssl.key.location" (printf "/etc/kafka-client/%s" $k.tls.keyKey) }}
{{- end }}
{{- $sec = merge (deepCopy $k.security) $sec }}
{{- if $sec }}{{ toYaml $sec }}{{ end }}
{{- end }}

{{/* The effective run file: values.runConfig with the chart's Kafka and weight store. */}}
{{- define "rollstream.runConfig" -}}
{{- $cfg := deepCopy .Values.runConfig }}
{{- $model := default dict $cfg.model }}
{{- if and $model.path $model.size (ne $model.size "tiny") }}
{{- fail (printf "runConfig.model.size: %s names a built-in model, but runConfig.model.path is set (%s): drop one of them" $model.size $model.path) }}
{{- end }}
{{- $kafka := dict "bootstrap" .Values.kafka.bootstrap }}
{{- if .Values.kafka.namespace }}
{{- $_ := set $kafka "namespace" .Values.kafka.namespace }}
{{- end }}
{{- $sec := fromYaml (include "rollstream.kafkaSecurity" .) }}
{{- if $sec }}
{{- $_ := set $kafka "security" $sec }}
{{- end }}
{{- $_ := set $cfg "kafka" (merge $kafka (default dict $cfg.kafka)) }}
{{- $ws := .Values.weightStore }}
{{- $weights := dict }}
{{- if eq $ws.type "s3" }}
{{- $_ := set $weights "uri" $ws.s3.uri }}
{{- if $ws.s3.endpoint }}
{{- $_ := set $weights "storage_options" (dict "endpoint_url" $ws.s3.endpoint) }}
{{- end }}
{{- else }}
{{- $_ := set $weights "uri" $ws.pvc.mountPath }}
{{- end }}
{{- $_ := set $cfg "weights" (merge $weights (default dict $cfg.weights)) }}
{{- toYaml $cfg }}
{{- end }}

{{/* httpGet probe on /healthz: (dict "p" $probeValues) */}}
{{- define "rollstream.probe" -}}
httpGet:
  path: /healthz
  port: metrics
periodSeconds: {{ .p.periodSeconds }}
timeoutSeconds: {{ .p.timeoutSeconds }}
failureThreshold: {{ .p.failureThreshold }}
{{- end }}

{{/* Container environment: (dict "root" $ "stage" "feed") */}}
{{- define "rollstream.env" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $s := index $v .stage }}
{{- $facts := index (fromYaml (include "rollstream.stageFacts" $root)) .stage }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: ROLLSTREAM_INSTANCE
  value: $(POD_NAME)
- name: ROLLSTREAM_CONFIG
  value: /etc/rollstream/run.yaml
- name: ROLLSTREAM_BOOTSTRAP
  value: {{ $v.kafka.bootstrap | quote }}
{{- if $v.kafka.namespace }}
- name: ROLLSTREAM_NAMESPACE
  value: {{ $v.kafka.namespace | quote }}
{{- end }}
- name: ROLLSTREAM_RUN_DIR
  value: /var/lib/rollstream
- name: XDG_CACHE_HOME
  value: /var/cache/rollstream
- name: HF_HOME
  value: /var/cache/rollstream/huggingface
{{- with include "rollstream.kafkaCredentialsEnv" $root | trim }}
{{ . }}
{{- end }}
{{- if and $facts.weights (eq $v.weightStore.type "s3") }}
{{- with $v.weightStore.s3 }}
{{- if .existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ .existingSecret }}, key: {{ .accessKeyIdKey }}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ .existingSecret }}, key: {{ .secretAccessKeyKey }}}
{{- end }}
{{- if .region }}
- name: AWS_DEFAULT_REGION
  value: {{ .region | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- range $name, $val := $s.env }}
- name: {{ $name }}
{{- if kindIs "map" $val }}
  {{- toYaml $val | nindent 2 }}
{{- else }}
  value: {{ $val | toString | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
SASL credentials. The run file cannot hold the password, and ROLLSTREAM_KAFKA__SECURITY
replaces kafka.security as a whole, so it carries the non-secret settings plus the user name
and password, which the kubelet substitutes from the Secret-backed variables ($(VAR)). The
substituted value must stay valid JSON: passwords may not contain `"` or `\`.
*/}}
{{- define "rollstream.kafkaCredentialsEnv" -}}
{{- $k := .Values.kafka }}
{{- if $k.sasl.enabled }}
- name: KAFKA_SASL_USERNAME
{{- if $k.sasl.username }}
  value: {{ $k.sasl.username | quote }}
{{- else }}
  valueFrom:
    secretKeyRef: {name: {{ $k.sasl.existingSecret }}, key: {{ $k.sasl.usernameKey }}}
{{- end }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $k.sasl.existingSecret }}, key: {{ $k.sasl.passwordKey }}}
{{- $sec := fromYaml (include "rollstream.kafkaSecurity" .) }}
{{- $_ := set $sec "sasl.username" "$(KAFKA_SASL_USERNAME)" }}
{{- $_ := set $sec "sasl.password" "$(KAFKA_SASL_PASSWORD)" }}
- name: ROLLSTREAM_KAFKA__SECURITY
  value: {{ toJson $sec | quote }}
{{- end }}
{{- end }}

{{/* Kafka TLS volumes and mounts. */}}
{{- define "rollstream.kafkaVolumes" -}}
{{- $t := .Values.kafka.tls }}
{{- if and $t.enabled $t.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ $t.caSecret }}
{{- end }}
{{- if and $t.enabled $t.clientSecret }}
- name: kafka-client
  secret:
    secretName: {{ $t.clientSecret }}
{{- end }}
{{- end }}

{{- define "rollstream.kafkaMounts" -}}
{{- $t := .Values.kafka.tls }}
{{- if and $t.enabled $t.caSecret }}
- name: kafka-ca
  mountPath: /etc/kafka-ca
  readOnly: true
{{- end }}
{{- if and $t.enabled $t.clientSecret }}
- name: kafka-client
  mountPath: /etc/kafka-client
  readOnly: true
{{- end }}
{{- end }}

{{- define "rollstream.weightsClaim" -}}
{{- default (printf "%s-weights" (include "rollstream.fullname" .)) .Values.weightStore.pvc.existingClaim }}
{{- end }}

{{/* The pod template of one stage: (dict "root" $ "stage" "feed") */}}
{{- define "rollstream.podTemplate" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $stage := .stage }}
{{- $s := index $v $stage }}
{{- $facts := index (fromYaml (include "rollstream.stageFacts" $root)) $stage }}
{{- $pvcWeights := and $facts.weights (eq $v.weightStore.type "pvc") }}
metadata:
  labels:
    {{- include "rollstream.stageLabels" . | nindent 4 }}
  annotations:
    checksum/config: {{ include "rollstream.runConfig" $root | sha256sum }}
    {{- with $s.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "rollstream.serviceAccountName" $root }}
  automountServiceAccountToken: false
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ $s.terminationGracePeriodSeconds }}
  {{- with $s.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $s.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $s.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ $stage }}
      image: {{ include "rollstream.image" (dict "root" $root "image" $s.image) | quote }}
      imagePullPolicy: {{ default $v.image.pullPolicy $s.image.pullPolicy }}
      {{- with $s.command }}
      command:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      args:
        - run
        - {{ $stage }}
        - --config
        - /etc/rollstream/run.yaml
        - --metrics-port
        - {{ $s.metrics.port | quote }}
        - --instance
        - $(POD_NAME)
        {{- range $s.args }}
        - {{ . | toString | quote }}
        {{- end }}
      env:
        {{- include "rollstream.env" . | trim | nindent 8 }}
      ports:
        - name: metrics
          containerPort: {{ $s.metrics.port }}
          protocol: TCP
      {{- if $s.probes.startup.enabled }}
      startupProbe:
        {{- include "rollstream.probe" (dict "p" $s.probes.startup) | nindent 8 }}
      {{- end }}
      {{- if $s.probes.liveness.enabled }}
      livenessProbe:
        {{- include "rollstream.probe" (dict "p" $s.probes.liveness) | nindent 8 }}
      {{- end }}
      {{- if $s.probes.readiness.enabled }}
      readinessProbe:
        {{- include "rollstream.probe" (dict "p" $s.probes.readiness) | nindent 8 }}
      {{- end }}
      {{- with $s.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/rollstream
          readOnly: true
        - name: data
          mountPath: /var/lib/rollstream
        - name: cache
          mountPath: /var/cache/rollstream
        {{- if $s.shmSize }}
        - name: shm
          mountPath: /dev/shm
        {{- end }}
        {{- if $pvcWeights }}
        - name: weights
          mountPath: {{ $v.weightStore.pvc.mountPath }}
        {{- end }}
        {{- if $v.modelStore.existingClaim }}
        - name: models
          mountPath: {{ $v.modelStore.mountPath }}
          readOnly: true
        {{- end }}
        {{- with include "rollstream.kafkaMounts" $root | trim }}
        {{- . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "rollstream.fullname" $root }}-run
    {{- if not (and (eq $facts.kind "StatefulSet") $s.persistence.enabled) }}
    - name: data
      emptyDir: {}
    {{- end }}
    - name: cache
      emptyDir: {}
    {{- if $s.shmSize }}
    - name: shm
      emptyDir:
        medium: Memory
        sizeLimit: {{ $s.shmSize }}
    {{- end }}
    {{- if $pvcWeights }}
    - name: weights
      persistentVolumeClaim:
        claimName: {{ include "rollstream.weightsClaim" $root }}
    {{- end }}
    {{- if $v.modelStore.existingClaim }}
    - name: models
      persistentVolumeClaim:
        claimName: {{ $v.modelStore.existingClaim }}
        readOnly: true
    {{- end }}
    {{- with include "rollstream.kafkaVolumes" $root | trim }}
    {{- . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* One stage: its headless Service and its Deployment or StatefulSet. */}}
{{- define "rollstream.stage" -}}
{{- $root := .root }}
{{- $stage := .stage }}
{{- $s := index $root.Values $stage }}
{{- $facts := index (fromYaml (include "rollstream.stageFacts" $root)) $stage }}
{{- if $s.enabled }}
{{- if and $s.persistence.enabled (ne $facts.kind "StatefulSet") }}
{{- fail (printf "%s.persistence.enabled: only the StatefulSet stages (replay, learner) keep a volume" $stage) }}
{{- end }}
{{- $name := include "rollstream.stageName" . }}
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "rollstream.stageLabels" . | nindent 4 }}
spec:
  clusterIP: None
  selector:
    {{- include "rollstream.stageSelector" . | nindent 4 }}
  ports:
    - name: metrics
      port: {{ $s.metrics.port }}
      targetPort: metrics
      protocol: TCP
---
apiVersion: apps/v1
kind: {{ $facts.kind }}
metadata:
  name: {{ $name }}
  labels:
    {{- include "rollstream.stageLabels" . | nindent 4 }}
spec:
  {{- if not (include "rollstream.autoscaled" .) }}
  replicas: {{ $s.replicas }}
  {{- end }}
  {{- if eq $facts.kind "StatefulSet" }}
  serviceName: {{ $name }}
  podManagementPolicy: Parallel
  {{- end }}
  selector:
    matchLabels:
      {{- include "rollstream.stageSelector" . | nindent 6 }}
  template:
    {{- include "rollstream.podTemplate" . | trim | nindent 4 }}
  {{- if and (eq $facts.kind "StatefulSet") $s.persistence.enabled }}
  volumeClaimTemplates:
    - metadata:
        name: data
      spec:
        accessModes: [ReadWriteOnce]
        {{- with $s.persistence.storageClass }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ $s.persistence.size }}
  {{- end }}
{{- end }}
{{- end }}
