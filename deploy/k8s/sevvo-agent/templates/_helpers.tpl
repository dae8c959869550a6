{{/* Naming, labels and the restricted pod settings for the agent. */}}

{{- define "sevvo-agent.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sevvo-agent.selectorLabels" -}}
{{- if .Values.sidecar.enabled -}}
{{- /* The pod is the customer's service with the agent beside it. */ -}}
app.kubernetes.io/name: {{ .Values.sidecar.name | default (include "sevvo-agent.fullname" .) }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: workload
{{- else -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}
{{- end -}}

{{- define "sevvo-agent.labels" -}}
{{ include "sevvo-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: sevvo
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "sevvo-agent.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- printf "%s/%s@%s" $image.registry $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s/%s:%s" $image.registry $image.repository ($image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The TCP ports the agent dials: the control plane's and the Temporal frontend's. */}}
{{- define "sevvo-agent.egressPorts" -}}
{{- $temporalPort := regexReplaceAll "^.*:" .Values.temporal.address "" | int -}}
{{- list (int .Values.controlPlane.port) $temporalPort | uniq | toJson -}}
{{- end -}}
