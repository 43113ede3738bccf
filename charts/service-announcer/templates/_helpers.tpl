{{/* The chart's name, or nameOverride. */}}
{{- define "service-announcer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The objects' name: fullnameOverride; else the release name when it holds the chart's name; else RELEASE-NAME. */}}
{{- define "service-announcer.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "service-announcer.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The labels that select the pods (immutable once the DaemonSet exists). */}}
{{- define "service-announcer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "service-announcer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Every object's labels. */}}
{{- define "service-announcer.labels" -}}
{{ include "service-announcer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "service-announcer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "service-announcer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The port of config.metrics.listen ("0.0.0.0:9479", "[::]:9479"): the probes, the container port and the
Prometheus annotation use it. */}}
{{- define "service-announcer.metricsPort" -}}
{{- $listen := toString (required "config.metrics.listen: required (the probes ask its port for /healthz and /readyz)" (dig "metrics" "listen" "" .Values.config)) }}
{{- $port := regexFind "[0-9]+$" $listen }}
{{- if not $port }}
{{- fail (printf "config.metrics.listen: %q has no port (HOST:PORT)" $listen) }}
{{- end }}
{{- $port }}
{{- end }}

{{/* The stop's times in order: the withdraw (config.speaker.shutdown_timeout, default 5) within stopTimeout, and
stopTimeout plus ExaBGP's own stop within terminationGracePeriodSeconds. */}}
{{- define "service-announcer.checkStopTimes" -}}
{{- $shutdown := float64 (dig "speaker" "shutdown_timeout" 5 .Values.config) }}
{{- if le (float64 .Values.stopTimeout) $shutdown }}
{{- fail (printf "stopTimeout: %v must be above config.speaker.shutdown_timeout (%v): the announcer withdraws within it" .Values.stopTimeout $shutdown) }}
{{- end }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (add (int .Values.stopTimeout) 5) }}
{{- fail (printf "terminationGracePeriodSeconds: %v must be at least stopTimeout + 5 (%v): ExaBGP stops after the announcer" .Values.terminationGracePeriodSeconds (add (int .Values.stopTimeout) 5)) }}
{{- end }}
{{- end }}
