{{/* Names and labels shared by every object of the chart. */}}
{{- define "commandcenter.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "commandcenter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component (web, worker, migrate). */}}
{{- define "commandcenter.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "commandcenter.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "commandcenter.fullname" .)) -}}
{{- end -}}

{{- define "commandcenter.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The OTLP endpoint: the bundled Collector's service, or the one configured. */}}
{{- define "commandcenter.otlpEndpoint" -}}
{{- if .Values.telemetry.otlpEndpoint -}}
{{- .Values.telemetry.otlpEndpoint -}}
{{- else -}}
{{- printf "http://%s-opentelemetry-collector:4317" .Release.Name -}}
{{- end -}}
{{- end -}}

{{/* Environment of every app container: the ConfigMap, the Secret and extra variables. */}}
{{- define "commandcenter.envFrom" -}}
envFrom:
  - configMapRef:
      name: {{ include "commandcenter.fullname" . }}-config
  - secretRef:
      name: {{ include "commandcenter.secretName" . }}
{{- with .Values.extraEnv }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Hooks of the migration job: before install and upgrade, or after install when the chart's own
PostgreSQL has to exist first (a pre-install hook runs before any object of the release). */}}
{{- define "commandcenter.migrateHooks" -}}
{{- if .Values.migrate.hooks -}}
{{- .Values.migrate.hooks -}}
{{- else if .Values.postgresql.enabled -}}
post-install,pre-upgrade
{{- else -}}
pre-install,pre-upgrade
{{- end -}}
{{- end -}}

{{/* Where notifications' runbook links point: config.RUNBOOK_BASE_URL, else the copy Grafana serves. */}}
{{- define "commandcenter.runbookBaseUrl" -}}
{{- .Values.config.RUNBOOK_BASE_URL | default (printf "%s/public/commandcenter" (trimSuffix "/" .Values.config.GRAFANA_URL)) -}}
{{- end -}}

{{/* The work in the queue: tasks ready to run now (deferred retries not yet due excluded) and tasks running. */}}
{{- define "commandcenter.queueDepthQuery" -}}
SELECT count(*) FROM django_tasks_database_dbtaskresult WHERE status = 'RUNNING' OR (status = 'READY' AND (run_after <= now() OR run_after >= '9999-01-01'))
{{- end -}}
