{{/* The chart name, or nameOverride. */}}
{{- define "taskmaster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The full name: fullnameOverride, else the release name when it contains the
chart name, else <release>-<chart>. Cut to 50 characters so that the longest
suffix ("-leader-election", "-webhook-tls") keeps names within 63.
*/}}
{{- define "taskmaster.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "taskmaster.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "taskmaster.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "taskmaster.selectorLabels" -}}
app.kubernetes.io/name: {{ include "taskmaster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "taskmaster.labels" -}}
helm.sh/chart: {{ include "taskmaster.chart" . }}
{{ include "taskmaster.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: taskmaster
{{- end -}}

{{/*
The operator's ServiceAccount. An existing one (serviceAccount.create=false)
must be named: falling back to "default" would bind the operator's rights to
every pod of the namespace that runs as "default".
*/}}
{{- define "taskmaster.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "taskmaster.fullname" .) .Values.serviceAccount.name -}}
{{- else if .Values.serviceAccount.name -}}
{{- .Values.serviceAccount.name -}}
{{- else -}}
{{- fail "serviceAccount.name is required with serviceAccount.create=false: the chart will not bind the operator's rights to the namespace's \"default\" ServiceAccount" -}}
{{- end -}}
{{- end -}}

{{- define "taskmaster.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "taskmaster.workerImage" -}}
{{- printf "%s:%s" .Values.workerImage.repository (.Values.workerImage.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "taskmaster.webhookService" -}}
{{- printf "%s-webhook" (include "taskmaster.fullname" .) -}}
{{- end -}}

{{- define "taskmaster.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "taskmaster.fullname" .) -}}
{{- end -}}

{{/* The operator makes its own serving certificate unless cert-manager does. */}}
{{- define "taskmaster.webhookSelfManaged" -}}
{{- if and .Values.webhook.enabled (not .Values.webhook.certManager.enabled) -}}true{{- end -}}
{{- end -}}

{{/* The rules the operator needs in every namespace whose tasks it runs. */}}
{{- define "taskmaster.operatorRules" -}}
# List and watch the tasks.
- apiGroups: [taskmaster.dev]
  resources: [scheduledtasks]
  verbs: [list, watch]
# Status is written through the status subresource only, by merge patch.
- apiGroups: [taskmaster.dev]
  resources: [scheduledtasks/status]
  verbs: [patch]
# Jobs carry an ownerReference with blockOwnerDeletion to their task: clusters
# that enable the OwnerReferencesPermissionEnforcement admission plugin check this.
- apiGroups: [taskmaster.dev]
  resources: [scheduledtasks/finalizers]
  verbs: [update]
# The runs: watched (label-selected), created (also as server-side dry runs by
# the webhook), deleted (Replace, history limits).
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, delete]
# Pod failures (exit codes, disruptions) of the runs, label-selected.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# JobCreated, InvalidSpec, ... on the tasks.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
{{- end -}}
