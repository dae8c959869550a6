{{/* Shared naming, labels and the restricted pod settings for every component. */}}

{{/* The components this chart deploys, in a fixed order. */}}
{{- define "sevvo.components" -}}
{{- list "auth" "connections" "orchestrator" | toJson -}}
{{- end -}}

{{/*
The gRPC services each component serves, by full proto name: what its
services/<name>/server.py registers. The one endpoint's GRPCRoute and Ingress both route from
this list, so a service added to a server is added here once; tests/test_k8s_routing.py checks it against the
servers and against every stub the agent and the CLI use.
*/}}
{{- define "sevvo.grpcServices" -}}
{{- dict
  "auth" (list
    "sevvo.auth.v1.AuthService"
    "sevvo.auth.v1.UserService"
    "sevvo.auth.v1.DeploymentService"
    "sevvo.auth.v1.WorkloadService")
  "connections" (list
    "sevvo.connections.v1.ConnectionService"
    "sevvo.connections.v1.ConnectionCredentialService"
    "sevvo.connections.v1.LeaseService"
    "sevvo.connections.v1.ConnectionRoleService"
    "sevvo.audit.v1.AuditService")
  "orchestrator" (list
    "sevvo.orchestrator.v1.OrchestratorService"
    "sevvo.orchestrator.v1.PayloadKeyService"
    "sevvo.orchestrator.v1.WorkProofService"
    "sevvo.orchestrator.v1.ModelService")
  | toJson -}}
{{- end -}}

{{/* The public host of the one endpoint; required once a route is rendered. */}}
{{- define "sevvo.endpointHost" -}}
{{- required "endpoint.host is required when endpoint.grpcRoute or endpoint.ingress is enabled" .Values.endpoint.host -}}
{{- end -}}

{{/* The in-cluster DNS name of a component's Service, which its certificate names. */}}
{{- define "sevvo.serviceHost" -}}
{{- $root := index . 0 -}}
{{- printf "%s.%s.svc" (include "sevvo.componentName" .) $root.Release.Namespace -}}
{{- end -}}

{{- define "sevvo.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects; called with (list $ "auth"). */}}
{{- define "sevvo.componentName" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- printf "%s-%s" (include "sevvo.fullname" $root | trunc (int (sub 62 (len $component)))) $component | trimSuffix "-" -}}
{{- end -}}

{{- define "sevvo.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "sevvo.labels" -}}
{{- $root := index . 0 -}}
{{ include "sevvo.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: sevvo
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "sevvo.image" -}}
{{- $image := .Values.global.image -}}
{{- if $image.digest -}}
{{- printf "%s/%s@%s" $image.registry $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s/%s:%s" $image.registry $image.repository ($image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/*
Restricted Pod Security Standard: non-root with a fixed UID, RuntimeDefault seccomp, and
fsGroup so the 0440 secret files are readable by the process's group.
*/}}
{{- define "sevvo.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "sevvo.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
{{- end -}}
