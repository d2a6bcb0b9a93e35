{{/*
Names, labels and the pieces the workloads share. Component helpers take a dict:
  root: the top context ($), component: "drafter" | "target" | "coordinator" | "test",
  values: that component's values.
*/}}

{{- define "polyspec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "polyspec.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "polyspec.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of a component's objects: <fullname>-<component>, within 63 characters. */}}
{{- define "polyspec.componentName" -}}
{{- printf "%s-%s" (include "polyspec.fullname" .root | trunc (int (sub 62 (len .component)))) .component | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of a release (never the chart version). */}}
{{- define "polyspec.selectorLabels" -}}
app.kubernetes.io/name: {{ include "polyspec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "polyspec.labels" -}}
helm.sh/chart: {{ include "polyspec.chart" . }}
{{ include "polyspec.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: polyspec
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "polyspec.componentSelectorLabels" -}}
{{ include "polyspec.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "polyspec.componentLabels" -}}
{{ include "polyspec.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The image of a component: the CUDA variant where it asks for GPUs; a digest wins over the tag. */}}
{{- define "polyspec.image" -}}
{{- $image := .root.Values.image }}
{{- $gpu := false }}
{{- with .values.gpu }}{{ $gpu = .enabled }}{{ end }}
{{- $digest := ternary $image.digests.cuda $image.digests.cpu $gpu }}
{{- $tag := $image.tag | default .root.Chart.AppVersion }}
{{- if $gpu }}{{ $tag = printf "%s%s" $tag $image.cudaTagSuffix }}{{ end }}
{{- if $digest }}
{{- printf "%s@%s" $image.repository $digest }}
{{- else }}
{{- printf "%s:%s" $image.repository $tag }}
{{- end }}
{{- end }}

{{- define "polyspec.coordinatorServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "polyspec.componentName" (dict "root" . "component" "coordinator")) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "polyspec.modelServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- include "polyspec.componentName" (dict "root" . "component" "model") }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{/* DNS name of a component's Service inside the cluster. */}}
{{- define "polyspec.serviceHost" -}}
{{- printf "%s.%s.svc.%s" (include "polyspec.componentName" .) .root.Release.Namespace .root.Values.clusterDomain }}
{{- end }}

{{/* The coordinator's --target value for the configured discovery. */}}
{{- define "polyspec.targetSpec" -}}
{{- $target := dict "root" . "component" "target" }}
{{- $service := include "polyspec.componentName" $target }}
{{- $discovery := .Values.coordinator.discovery }}
{{- if eq $discovery "endpointslices" }}
{{- printf "kubernetes:///%s.%s:grpc" $service .Release.Namespace }}
{{- else if eq $discovery "dns" }}
{{- printf "dns:///%s:%d" (include "polyspec.serviceHost" $target) (int .Values.target.port) }}
{{- else }}
{{- if .Values.target.autoscaling.enabled }}
{{- fail "coordinator.discovery=static cannot follow target.autoscaling: use endpointslices or dns" }}
{{- end }}
{{- $addresses := list }}
{{- range $i := until (int .Values.target.replicaCount) }}
{{- $addresses = append $addresses (printf "%s-%d.%s:%d" $service $i (include "polyspec.serviceHost" $target) (int $.Values.target.port)) }}
{{- end }}
{{- join "," $addresses }}
{{- end }}
{{- end }}

{{/* A number as the CLI expects it (1000000, not 1e+06); strings pass through. */}}
{{- define "polyspec.flagValue" -}}
{{- $v := . }}
{{- if kindIs "float64" $v }}
{{- if eq $v (floor $v) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else }}
{{- $v }}
{{- end }}
{{- end }}

{{/* Settings key -> CLI flag, per kind of process. */}}
{{- define "polyspec.modelFlags" -}}
device: --device
dtype: --dtype
quantize: --quantize
cacheBudgetMib: --cache-budget-mib
cacheTtlSeconds: --cache-ttl-seconds
maxDraftTokens: --max-draft-tokens
maxSupport: --max-support
maxQueue: --max-queue
threads: --threads
linearKernel: --linear-kernel
maxMessageBytes: --max-message-bytes
maxConnectionAgeSeconds: --max-connection-age
maxConnectionAgeGraceSeconds: --max-connection-age-grace
{{- end }}

{{- define "polyspec.lookupFlags" -}}
cacheTtlSeconds: --cache-ttl-seconds
maxDraftTokens: --max-draft-tokens
maxQueue: --max-queue
maxMessageBytes: --max-message-bytes
maxConnectionAgeSeconds: --max-connection-age
maxConnectionAgeGraceSeconds: --max-connection-age-grace
ngramMin: --ngram-min
ngramMax: --ngram-max
suffixDepth: --suffix-depth
suffixMinMatch: --suffix-min-match
suffixMinScore: --suffix-min-score
crossRequestMemory: --cross-request-memory
cacheBudgetTokens: --cache-budget-tokens
{{- end }}

{{/* Whether a component is a model-free lookup drafter (drafter.kind ngram or suffix). */}}
{{- define "polyspec.isLookup" -}}
{{- if and (eq .component "drafter") (ne (.values.kind | default "model") "model") }}true{{- end }}
{{- end }}

{{/* The flags of a component's settings: the coordinator's, a lookup drafter's or a model service's. */}}
{{- define "polyspec.flagsOf" -}}
{{- if eq .component "coordinator" }}
{{- include "polyspec.coordinatorFlags" . }}
{{- else if include "polyspec.isLookup" . }}
{{- include "polyspec.lookupFlags" . }}
{{- else }}
{{- include "polyspec.modelFlags" . }}
{{- end }}
{{- end }}

{{/* A component's settings values; a lookup drafter's add drafter.lookup and refuse model-only ones. */}}
{{- define "polyspec.settingsValues" -}}
{{- $settings := deepCopy .values.settings }}
{{- if include "polyspec.isLookup" . }}
{{- $flags := include "polyspec.lookupFlags" . | fromYaml }}
{{- range $key, $value := $settings }}
{{- if and (not (kindIs "invalid" $value)) (not (hasKey $flags $key)) }}
{{- fail (printf "drafter.settings.%s does not apply to a lookup drafter (drafter.kind %s); leave it null" $key $.values.kind) }}
{{- end }}
{{- end }}
{{- range $key, $value := (.values.lookup | default dict) }}
{{- if not (kindIs "invalid" $value) }}
{{- $_ := set $settings $key $value }}
{{- end }}
{{- end }}
{{- end }}
{{- $set := dict }}
{{- range $key, $value := $settings }}
{{- if not (kindIs "invalid" $value) }}
{{- $_ := set $set $key $value }}
{{- end }}
{{- end }}
{{- toYaml $set }}
{{- end }}

{{- define "polyspec.coordinatorFlags" -}}
scheduler: --scheduler
lookaheadK: --lookahead-k
maxLookaheadK: --max-lookahead-k
confidenceThreshold: --confidence-threshold
autoConfidenceThreshold: --auto-confidence-threshold
discoArtifact: --disco-artifact
discoArtifactDir: --disco-artifact-dir
maxSupport: --max-support
maxNewTokensCap: --max-new-tokens-cap
maxPromptBytes: --max-prompt-bytes
maxPromptTokens: --max-prompt-tokens
maxConcurrentRequests: --max-concurrent-requests
maxQueuedRequests: --max-queued-requests
callTimeoutSeconds: --call-timeout
callTimeoutFactor: --call-timeout-factor
minCallTimeoutSeconds: --min-call-timeout
ejectAfterFailures: --eject-after-failures
ejectionSeconds: --ejection-seconds
callRetrySeconds: --call-retry
startupTimeoutSeconds: --startup-timeout
shutdownGraceSeconds: --shutdown-grace
maxMessageBytes: --max-message-bytes
modelMaxMessageBytes: --model-max-message-bytes
maxConnectionAgeSeconds: --max-connection-age
maxConnectionAgeGraceSeconds: --max-connection-age-grace
{{- end }}

{{/*
The settings of a component that are set, as a dict ConfigMap key -> value. A model service on a GPU
defaults to --device cuda; its model folder is MODEL_DIR.
*/}}
{{- define "polyspec.settingsData" -}}
{{- $prefix := upper .component }}
{{- $flags := include "polyspec.flagsOf" . | fromYaml }}
{{- $settings := include "polyspec.settingsValues" . | fromYaml }}
{{- if and (ne .component "coordinator") (not (include "polyspec.isLookup" .)) .values.gpu.enabled (kindIs "invalid" $settings.device) }}
{{- $_ := set $settings "device" "cuda" }}
{{- end }}
{{- if and (eq .component "drafter") (not (include "polyspec.isLookup" .)) (not .values.gpu.enabled) }}
{{- if kindIs "invalid" $settings.dtype }}
{{- $_ := set $settings "dtype" "bfloat16" }}
{{- end }}
{{- if kindIs "invalid" $settings.quantize }}
{{- $_ := set $settings "quantize" "int8-weight-only" }}
{{- end }}
{{- end }}
{{- if ne .component "coordinator" }}
{{- include "polyspec.checkQuantize" (dict "component" .component "settings" $settings) }}
{{- else }}
{{- include "polyspec.discoSettings" (dict "root" .root "settings" $settings) }}
{{- end }}
{{- $data := dict }}
{{- range $key := keys $flags | sortAlpha }}
{{- if hasKey $settings $key }}
{{- $value := get $settings $key }}
{{- $_ := set $data (printf "%s_%s" $prefix (snakecase $key | upper)) (include "polyspec.flagValue" $value) }}
{{- end }}
{{- end }}
{{- if ne .component "coordinator" }}
{{- $_ := set $data (printf "%s_MODEL_DIR" $prefix) (include "polyspec.modelDir" .) }}
{{- $model := ternary .root.Values.target .values (eq (include "polyspec.isLookup" .) "true") }}
{{- if not $model.modelPath }}
{{- $_ := set $data (printf "%s_MODEL" $prefix) $model.model }}
{{- end }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{/*
The coordinator's DISCO stop classifier (edits .settings): an empty discoArtifactDir is unset. Without a
drafter the default discoArtifact=auto is dropped (there is nothing to stop); an artifact folder or a
discoArtifactDir fails the render, as does a discoArtifactDir without discoArtifact=auto.
*/}}
{{- define "polyspec.discoSettings" -}}
{{- $settings := .settings }}
{{- if not (get $settings "discoArtifactDir") }}
{{- $_ := unset $settings "discoArtifactDir" }}
{{- end }}
{{- $artifact := toString (get $settings "discoArtifact") }}
{{- if not .root.Values.drafter.enabled }}
{{- if or (hasKey $settings "discoArtifactDir") (and (hasKey $settings "discoArtifact") (ne $artifact "auto")) }}
{{- fail "coordinator.settings.discoArtifact/discoArtifactDir load a stop classifier for the drafter: set drafter.enabled=true, or set discoArtifact=auto (or null) and discoArtifactDir empty" }}
{{- end }}
{{- $_ := unset $settings "discoArtifact" }}
{{- else if and (hasKey $settings "discoArtifactDir") (ne $artifact "auto") }}
{{- fail "coordinator.settings.discoArtifactDir is searched only with coordinator.settings.discoArtifact=auto" }}
{{- end }}
{{- end }}

{{/*
Fails the render where `serve model` would refuse its quantize setting: int8 layers run on the cpu,
int8-dynamic in float32, int8-weight-only in bfloat16 or float32.
*/}}
{{- define "polyspec.checkQuantize" -}}
{{- $quantize := toString (get .settings "quantize" | default "none") }}
{{- $device := toString (get .settings "device" | default "cpu") }}
{{- $dtype := toString (get .settings "dtype" | default "float32") }}
{{- if ne $quantize "none" }}
{{- if ne $device "cpu" }}
{{- fail (printf "%s.settings.quantize=%s runs on the cpu only (device %s): set %s.settings.quantize=none" .component $quantize $device .component) }}
{{- end }}
{{- if and (eq $quantize "int8-dynamic") (ne $dtype "float32") }}
{{- fail (printf "%s.settings.quantize=int8-dynamic computes in float32 (dtype %s): set %s.settings.quantize=none or int8-weight-only" .component $dtype .component) }}
{{- end }}
{{- if and (eq $quantize "int8-weight-only") (eq $dtype "float16") }}
{{- fail (printf "%s.settings.quantize=int8-weight-only computes in bfloat16 or float32 (dtype float16)" .component) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The model folder a model service loads. */}}
{{- define "polyspec.modelDir" -}}
{{- $cache := .root.Values.models.cacheDir | trimSuffix "/" }}
{{- $values := ternary .root.Values.target .values (eq (include "polyspec.isLookup" .) "true") }}
{{- if $values.modelPath }}
{{- printf "%s/%s" $cache ($values.modelPath | trimPrefix "/") }}
{{- else }}
{{- printf "%s/models/%s" $cache $values.model }}
{{- end }}
{{- end }}

{{/* env entries reading each setting from the ConfigMap, and the matching --flag=$(VAR) args. */}}
{{- define "polyspec.settingsEnv" -}}
{{- $configMap := include "polyspec.componentName" (dict "root" .root "component" "config") }}
{{- range $key, $_ := include "polyspec.settingsData" . | fromYaml }}
- name: {{ $key }}
  valueFrom:
    configMapKeyRef:
      name: {{ $configMap }}
      key: {{ $key }}
{{- end }}
{{- end }}

{{- define "polyspec.settingsArgs" -}}
{{- $prefix := upper .component }}
{{- $flags := include "polyspec.flagsOf" . | fromYaml }}
{{- $data := include "polyspec.settingsData" . | fromYaml }}
{{- range $key := keys $flags | sortAlpha }}
{{- $var := printf "%s_%s" $prefix (snakecase $key | upper) }}
{{- if hasKey $data $var }}
- {{ printf "%s=$(%s)" (get $flags $key) $var | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Environment every polyspec container gets: writable places under /tmp, no hub access. */}}
{{- define "polyspec.baseEnv" -}}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /tmp/.cache
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
- name: POLYSPEC_CACHE_DIR
  value: {{ .Values.models.cacheDir | quote }}
- name: HF_HUB_OFFLINE
  value: "1"
- name: TRANSFORMERS_OFFLINE
  value: "1"
- name: PYTHONUNBUFFERED
  value: "1"
{{- end }}

{{/* Requests and limits, with the GPU limit added where the component asks for GPUs. */}}
{{- define "polyspec.resources" -}}
{{- $resources := deepCopy (.values.resources | default dict) }}
{{- $gpu := .values.gpu | default dict }}
{{- if $gpu.enabled }}
{{- $limits := $resources.limits | default dict }}
{{- $_ := set $limits $gpu.resourceName (int $gpu.count) }}
{{- $_ := set $resources "limits" $limits }}
{{- end }}
{{- toYaml $resources }}
{{- end }}

{{/*
gRPC startup, liveness and readiness probes (grpc.health.v1). kubelet's gRPC probes speak plaintext only:
with TLS on they use the plaintext health port (tls.healthPort).
*/}}
{{- define "polyspec.probes" -}}
{{- $probes := .values.probes }}
{{- $port := ternary .root.Values.tls.healthPort .values.port .root.Values.tls.enabled }}
startupProbe:
  grpc:
    port: {{ $port }}
    service: {{ .service }}
  {{- toYaml $probes.startup | nindent 2 }}
livenessProbe:
  grpc:
    port: {{ $port }}
    service: ""
  {{- toYaml $probes.liveness | nindent 2 }}
readinessProbe:
  grpc:
    port: {{ $port }}
    service: {{ .service }}
  {{- toYaml $probes.readiness | nindent 2 }}
{{- end }}

{{/* The plaintext health port's containerPort, with TLS on. */}}
{{- define "polyspec.healthContainerPort" -}}
{{- if .Values.tls.enabled }}
- name: health
  containerPort: {{ .Values.tls.healthPort }}
  protocol: TCP
{{- end }}
{{- end }}

{{/*
Where the certificates and the token are mounted. TLS_DIR holds the server certificate (tls.crt, tls.key)
and the CA (ca.crt); CLIENT_TLS_DIR the client certificate for mutual TLS.
*/}}
{{- define "polyspec.tlsDir" -}}/etc/polyspec/tls{{- end }}
{{- define "polyspec.clientTlsDir" -}}/etc/polyspec/tls-client{{- end }}
{{- define "polyspec.authDir" -}}/etc/polyspec/auth{{- end }}

{{/* Whether a component presents a client certificate: the coordinator to mutual-TLS model services,
the test pod to a mutual-TLS coordinator. */}}
{{- define "polyspec.usesClientCertificate" -}}
{{- $tls := .root.Values.tls }}
{{- if and $tls.enabled (or (and (eq .component "coordinator") $tls.mutual.models) (and (eq .component "test") $tls.mutual.coordinator)) }}true{{ end }}
{{- end }}

{{/* A server's TLS flags (with TLS on): its certificate, the client CA for mutual TLS, the health port. */}}
{{- define "polyspec.tlsServerArgs" -}}
{{- $tls := .root.Values.tls }}
{{- if $tls.enabled }}
{{- $dir := include "polyspec.tlsDir" . }}
- --tls-cert={{ $dir }}/tls.crt
- --tls-key={{ $dir }}/tls.key
{{- if ternary $tls.mutual.coordinator $tls.mutual.models (eq .component "coordinator") }}
- --tls-client-ca={{ $dir }}/ca.crt
{{- end }}
- --health-port={{ $tls.healthPort }}
{{- end }}
{{- end }}

{{/* The coordinator's flags for its channels to the model services (TLS) and for its bearer token. */}}
{{- define "polyspec.coordinatorSecurityArgs" -}}
{{- $tls := .Values.tls }}
{{- if $tls.enabled }}
- --model-tls-ca={{ include "polyspec.tlsDir" . }}/ca.crt
{{- if $tls.mutual.models }}
- --model-tls-cert={{ include "polyspec.clientTlsDir" . }}/tls.crt
- --model-tls-key={{ include "polyspec.clientTlsDir" . }}/tls.key
{{- end }}
- --model-tls-server-name={{ $tls.serverName | default (include "polyspec.serviceHost" (dict "root" . "component" "target")) }}
{{- end }}
{{- if .Values.auth.enabled }}
- --auth-token-file={{ include "polyspec.authDir" . }}/token
{{- end }}
{{- end }}

{{/* Secret volumes of a component: the certificate, the client certificate, the token (coordinator). */}}
{{- define "polyspec.securityVolumes" -}}
{{- $tls := .root.Values.tls }}
{{- $auth := .root.Values.auth }}
{{- if $tls.enabled }}
- name: tls
  secret:
    secretName: {{ required "tls.secretName is required with tls.enabled" $tls.secretName }}
    defaultMode: 288  # 0440: the pod's group (fsGroup) reads the key
    {{- if eq .component "test" }}
    items:  # a client needs only the CA
      - key: ca.crt
        path: ca.crt
    {{- end }}
{{- if include "polyspec.usesClientCertificate" . }}
- name: tls-client
  secret:
    secretName: {{ $tls.clientSecretName | default $tls.secretName }}
    defaultMode: 288
{{- end }}
{{- end }}
{{- if and $auth.enabled (has .component (list "coordinator" "test")) }}
- name: auth-token
  secret:
    secretName: {{ required "auth.secretName is required with auth.enabled" $auth.secretName }}
    defaultMode: 288
    items:
      - key: {{ $auth.secretKey }}
        path: token
{{- end }}
{{- end }}

{{- define "polyspec.securityMounts" -}}
{{- if .root.Values.tls.enabled }}
- name: tls
  mountPath: {{ include "polyspec.tlsDir" . }}
  readOnly: true
{{- if include "polyspec.usesClientCertificate" . }}
- name: tls-client
  mountPath: {{ include "polyspec.clientTlsDir" . }}
  readOnly: true
{{- end }}
{{- end }}
{{- if and .root.Values.auth.enabled (has .component (list "coordinator" "test")) }}
- name: auth-token
  mountPath: {{ include "polyspec.authDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/* Scheduling and pod-level settings a component may set. */}}
{{- define "polyspec.podScheduling" -}}
{{- with .values.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod template metadata: labels and a checksum of the settings so a change rolls the pods. */}}
{{- define "polyspec.podMetadata" -}}
labels:
  {{- include "polyspec.componentLabels" . | trim | nindent 2 }}
  {{- with .values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/config: {{ include "polyspec.settingsData" . | sha256sum }}
  {{- with .values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* The volume holding the models. */}}
{{- define "polyspec.modelVolume" -}}
{{- $volume := .root.Values.models.volume }}
- name: models
{{- if eq $volume.type "existingClaim" }}
  persistentVolumeClaim:
    claimName: {{ required "models.volume.existingClaim is required with type existingClaim" $volume.existingClaim }}
{{- else if eq $volume.type "ephemeral" }}
  ephemeral:
    volumeClaimTemplate:
      metadata:
        labels:
          {{- include "polyspec.componentLabels" . | trim | nindent 10 }}
      spec:
        accessModes: ["ReadWriteOnce"]
        {{- with $volume.storageClassName }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ $volume.size }}
{{- else }}
  emptyDir:
    sizeLimit: {{ $volume.sizeLimit }}
{{- end }}
{{- end }}

{{- define "polyspec.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{/* The init container fetching a named model into the volume (none for a modelPath). */}}
{{- define "polyspec.fetchInitContainer" -}}
{{- $fetch := .root.Values.models.fetch }}
{{- $model := ternary .root.Values.target .values (eq (include "polyspec.isLookup" .) "true") }}
{{- if and $fetch.enabled (not $model.modelPath) }}
- name: fetch-model
  image: {{ include "polyspec.image" . | quote }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  args:
    - --log-level={{ .root.Values.logLevel }}
    - models
    - fetch
    - --no-progress
    - $({{ upper .component }}_MODEL)
  env:
    {{- include "polyspec.baseEnv" .root | trim | nindent 4 }}
    {{- with include "polyspec.settingsEnv" . | trim }}{{ . | nindent 4 }}{{- end }}
    {{- with $fetch.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  securityContext:
    {{- toYaml .root.Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml $fetch.resources | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: {{ .root.Values.models.cacheDir }}
    - name: tmp
      mountPath: /tmp
{{- end }}
{{- end }}

{{/* The pod spec of a model service (drafter or target). */}}
{{- define "polyspec.modelPodSpec" -}}
serviceAccountName: {{ include "polyspec.modelServiceAccountName" .root }}
automountServiceAccountToken: false
enableServiceLinks: false
terminationGracePeriodSeconds: {{ .values.terminationGracePeriodSeconds }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- include "polyspec.podScheduling" . }}
{{- with include "polyspec.fetchInitContainer" . | trim }}
initContainers:
  {{- . | nindent 2 }}
{{- end }}
containers:
  - name: {{ .component }}
    image: {{ include "polyspec.image" . | quote }}
    imagePullPolicy: {{ .root.Values.image.pullPolicy }}
    args:
      - --log-level={{ .root.Values.logLevel }}
      - serve
      {{- if include "polyspec.isLookup" . }}
      - drafter
      - --kind={{ .values.kind }}
      - --target-model=$({{ upper .component }}_MODEL_DIR)
      {{- else }}
      - model
      - --model=$({{ upper .component }}_MODEL_DIR)
      {{- end }}
      - --host=0.0.0.0
      - --port={{ .values.port }}
      - --metrics-port={{ .values.metricsPort }}
      {{- with include "polyspec.tlsServerArgs" . | trim }}{{ . | nindent 6 }}{{- end }}
      {{- with include "polyspec.settingsArgs" . | trim }}{{ . | nindent 6 }}{{- end }}
      {{- with .values.extraArgs }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    env:
      {{- include "polyspec.baseEnv" .root | trim | nindent 6 }}
      {{- with include "polyspec.settingsEnv" . | trim }}{{ . | nindent 6 }}{{- end }}
      {{- with .values.env }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    ports:
      - name: grpc
        containerPort: {{ .values.port }}
        protocol: TCP
      - name: metrics
        containerPort: {{ .values.metricsPort }}
        protocol: TCP
      {{- with include "polyspec.healthContainerPort" .root | trim }}{{ . | nindent 6 }}{{- end }}
    {{- include "polyspec.probes" (dict "root" .root "values" .values "service" "polyspec.v1.ModelService") | trim | nindent 4 }}
    securityContext:
      {{- toYaml .root.Values.securityContext | nindent 6 }}
    resources:
      {{- include "polyspec.resources" . | trim | nindent 6 }}
    volumeMounts:
      - name: models
        mountPath: {{ .root.Values.models.cacheDir }}
        readOnly: true
      - name: tmp
        mountPath: /tmp
      {{- with include "polyspec.securityMounts" . | trim }}{{ . | nindent 6 }}{{- end }}
volumes:
  {{- include "polyspec.modelVolume" . | trim | nindent 2 }}
  {{- include "polyspec.tmpVolume" .root | trim | nindent 2 }}
  {{- with include "polyspec.securityVolumes" . | trim }}{{ . | nindent 2 }}{{- end }}
{{- end }}
