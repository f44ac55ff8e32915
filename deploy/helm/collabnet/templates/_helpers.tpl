{{/*
Names and labels. Other templates of the chart (and the monitoring templates) use:
  collabnet.fullname                  the release's name prefix
  collabnet.labels / .selectorLabels  common labels of the release (take the root context)
  collabnet.componentLabels / .componentSelectorLabels  (dict "ctx" $ "component" "reviews")
  collabnet.serviceNames              a JSON list of the enabled services' short names
  collabnet.service                   (dict "ctx" $ "name" "reviews") a JSON object: defaults merged with the service
*/}}

{{- define "collabnet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "collabnet.fullname" -}}
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

{{- define "collabnet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "collabnet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "collabnet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "collabnet.labels" -}}
helm.sh/chart: {{ include "collabnet.chart" . }}
{{ include "collabnet.selectorLabels" . }}
app.kubernetes.io/version: {{ include "collabnet.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: collabnet
{{- end }}

{{- define "collabnet.componentSelectorLabels" -}}
{{ include "collabnet.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "collabnet.componentLabels" -}}
{{ include "collabnet.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "collabnet.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "collabnet.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "collabnet.imageTag" .) }}
{{- end }}

{{/* A deep merge in which the override wins, false, 0 and "" included (mergeOverwrite keeps a default's
true when a service sets false, so it cannot turn a default off). Lists are replaced, not merged. */}}
{{- define "collabnet.merge" -}}
{{- $out := deepCopy .base }}
{{- range $key, $value := .over }}
{{- $base := get $out $key }}
{{- if and (kindIs "map" $value) (kindIs "map" $base) }}
{{- $_ := set $out $key (include "collabnet.merge" (dict "base" $base "over" $value) | fromJson) }}
{{- else }}
{{- $_ := set $out $key $value }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{- define "collabnet.serviceNames" -}}
{{- $names := list }}
{{- range $name, $svc := .Values.services }}
{{- if $svc.enabled }}
{{- $names = append $names $name }}
{{- end }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/* One service's settings: `defaults` with the service's own values over them, and its name. */}}
{{- define "collabnet.service" -}}
{{- $svc := include "collabnet.merge" (dict "base" .ctx.Values.defaults "over" (get .ctx.Values.services .name)) | fromJson }}
{{- $_ := set $svc "name" .name }}
{{- toJson $svc }}
{{- end }}

{{/* The enabled services that list `name` among their callers: the ones it calls. */}}
{{- define "collabnet.callees" -}}
{{- $callees := list }}
{{- range $callee, $svc := .ctx.Values.services }}
{{- if and $svc.enabled (has $.name $svc.callers) }}
{{- $callees = append $callees $callee }}
{{- end }}
{{- end }}
{{- toJson $callees }}
{{- end }}

{{- define "collabnet.port" -}}
{{- if eq .svc.kind "http" }}{{ .ctx.Values.ports.http }}{{ else }}{{ .ctx.Values.ports.grpc }}{{ end }}
{{- end }}

{{- define "collabnet.portName" -}}
{{- if eq .svc.kind "http" }}http{{ else }}grpc{{ end }}
{{- end }}

{{/* The non-secret settings of one service: the data of its ConfigMap and the env of its migration Job. */}}
{{- define "collabnet.config" -}}
{{- $v := .ctx.Values }}
{{- $fullname := include "collabnet.fullname" .ctx }}
{{- $config := dict
  "COLLABNET_ENV" $v.environment
  "COLLABNET_LOG_LEVEL" $v.logLevel
  "COLLABNET_LOG_FORMAT" "json"
  "COLLABNET_STATE_DIR" "/var/lib/collabnet"
  "COLLABNET_MIGRATE_ON_START" "false"
  "COLLABNET_NATS_URL" $v.nats.url
  "COLLABNET_STREAM_REPLICAS" (toString $v.nats.streamReplicas)
}}
{{- if eq .svc.kind "http" }}
{{- $_ := set $config "COLLABNET_HTTP_HOST" "0.0.0.0" }}
{{- $_ := set $config "COLLABNET_HTTP_PORT" (toString $v.ports.http) }}
{{- $_ := set $config "COLLABNET_TRUSTED_PARTNERS" (toJson $v.gateway.trustedPartners) }}
{{- $_ := set $config "COLLABNET_RATE_LIMIT_PER_SECOND" (toString $v.gateway.rateLimitPerSecond) }}
{{- else }}
{{- $_ := set $config "COLLABNET_GRPC_HOST" "0.0.0.0" }}
{{- $_ := set $config "COLLABNET_GRPC_PORT" (toString $v.ports.grpc) }}
{{- end }}
{{- range $callee := include "collabnet.callees" . | fromJsonArray }}
{{- $_ := set $config (printf "COLLABNET_%s_ADDRESS" (upper $callee)) (printf "%s-%s:%v" $fullname $callee $v.ports.grpc) }}
{{- end }}
{{- if $v.monitoring.prometheus.enabled }}
{{- $_ := set $config "COLLABNET_METRICS_HOST" "0.0.0.0" }}
{{- $_ := set $config "COLLABNET_METRICS_PORT" (toString $v.monitoring.prometheus.port) }}
{{- end }}
{{- if $v.telemetry.otlpEndpoint }}
{{- $_ := set $config "OTEL_EXPORTER_OTLP_ENDPOINT" $v.telemetry.otlpEndpoint }}
{{- $_ := set $config "OTEL_EXPORTER_OTLP_PROTOCOL" $v.telemetry.otlpProtocol }}
{{- $_ := set $config "OTEL_TRACES_SAMPLER" "parentbased_traceidratio" }}
{{- $_ := set $config "OTEL_TRACES_SAMPLER_ARG" (toString $v.telemetry.samplingRatio) }}
{{- else }}
{{- /* Without a collector the kit would append spans to a file in the state dir (an emptyDir) without end. */}}
{{- $_ := set $config "OTEL_TRACES_SAMPLER" "always_off" }}
{{- end }}
{{- range $key, $value := .svc.config }}
{{- $_ := set $config $key (toString $value) }}
{{- end }}
{{- toJson $config }}
{{- end }}

{{/* The settings that come from Secrets, as env entries (secretKeyRef only: the chart never holds a secret). */}}
{{- define "collabnet.secretEnv" -}}
{{- $v := .ctx.Values }}
{{- if .svc.database.enabled }}
- name: COLLABNET_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.database.existingSecret }}
      key: {{ .svc.database.secretKey }}
{{- end }}
- name: COLLABNET_PRINCIPAL_SIGNING_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.principalSigning.existingSecret }}
      key: {{ $v.principalSigning.key }}
{{- if eq .name "analytics" }}
- name: COLLABNET_PSEUDONYM_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.analytics.pseudonymKey.existingSecret }}
      key: {{ $v.analytics.pseudonymKey.key }}
{{- end }}
{{- if $v.nats.existingSecret }}
- name: COLLABNET_NATS_USER
  valueFrom:
    secretKeyRef:
      name: {{ $v.nats.existingSecret }}
      key: {{ $v.nats.userKey }}
- name: COLLABNET_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $v.nats.existingSecret }}
      key: {{ $v.nats.passwordKey }}
{{- end }}
{{- end }}

{{- define "collabnet.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "collabnet.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "collabnet.volumeMounts" -}}
- name: state
  mountPath: /var/lib/collabnet
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "collabnet.volumes" -}}
- name: state
  emptyDir:
    sizeLimit: {{ .ctx.Values.stateDir.sizeLimit }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .ctx.Values.tmpDir.sizeLimit }}
{{- end }}

{{/* Scheduling shared by a service's pods and its migration Job's pod. */}}
{{- define "collabnet.scheduling" -}}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* A NetworkPolicy peer list from {namespaceSelector, podSelector}; empty when both are empty (anyone). */}}
{{- define "collabnet.selectorPeer" -}}
{{- $peer := dict }}
{{- with .namespaceSelector }}{{ $_ := set $peer "namespaceSelector" . }}{{ end }}
{{- with .podSelector }}{{ $_ := set $peer "podSelector" . }}{{ end }}
{{- if $peer }}{{ list $peer | toYaml }}{{ end }}
{{- end }}

{{/* Egress rules every pod of the release needs: DNS, PostgreSQL (when `database`), the OTLP collector. */}}
{{- define "collabnet.commonEgress" -}}
{{- $np := .ctx.Values.networkPolicy }}
- ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
  {{- with include "collabnet.selectorPeer" $np.dns }}
  to:
    {{- . | trim | nindent 4 }}
  {{- end }}
{{- if .database }}
- ports:
    - protocol: TCP
      port: {{ $np.postgresql.port }}
  {{- with $np.postgresql.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- if .ctx.Values.telemetry.otlpEndpoint }}
- ports:
    {{- range $np.otlp.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- with $np.otlp.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
