{{/* The chart's name. */}}
{{- define "agent-server.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, used for every object. */}}
{{- define "agent-server.fullname" -}}
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

{{/* Labels of every object. */}}
{{- define "agent-server.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "agent-server.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the pods. */}}
{{- define "agent-server.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agent-server.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The service account the pods run as. */}}
{{- define "agent-server.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agent-server.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the keys, and its key. */}}
{{- define "agent-server.keysSecret" -}}
{{- default (include "agent-server.fullname" .) .Values.auth.existingSecret }}
{{- end }}
{{- define "agent-server.keysSecretKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretKey }}{{ else }}OH_SESSION_API_KEYS{{ end }}
{{- end }}

{{/* agent-server's config.yaml: the image's layout, then .Values.config over it. */}}
{{- define "agent-server.config" -}}
{{- $layout := dict
  "server" (dict "addr" (printf "0.0.0.0:%v" .Values.service.targetPort))
  "admin" (dict "addr" (printf "0.0.0.0:%v" .Values.adminPort))
  "plugins" (dict "dir" "/usr/lib/agent-server/plugins")
  "storage" (dict "path" "/var/lib/agent-server/agent-server.db")
  "log" (dict "format" "json") }}
{{- toYaml (mergeOverwrite $layout (deepCopy .Values.config)) }}
{{- end }}
