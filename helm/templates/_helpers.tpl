{{/*
Helpers: names and labels, the Serve config, and one helper per block that every Ray pod repeats
(security contexts, volumes, volume mounts, the model download, the whole pod template).
*/}}

{{- define "switchyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/* The RayService's name; KubeRay derives longer names (clusters, pods, services) from it. */}}
{{- define "switchyard.fullname" -}}
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

{{- define "switchyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "switchyard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "switchyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "switchyard.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{/* The Ray Serve config (`serveConfigV2`); its app `args` are the `switchyard:` values, with the pools of
`expertPools` added (_pools.tpl; without pools, the values unchanged). */}}
{{- define "switchyard.serveConfig" -}}
proxy_location: {{ .Values.serve.proxyLocation }}
http_options:
  host: 0.0.0.0
  port: {{ .Values.serve.port }}
applications:
  - name: {{ .Values.serve.applicationName }}
    route_prefix: {{ .Values.serve.routePrefix }}
    import_path: switchyard.cluster.app:build_app
    args:
      {{- include "switchyard.appArgs" . | nindent 6 }}
{{- end }}

{{/* The placement ConfigMap's name, or "" without a placement file. */}}
{{- define "switchyard.placementConfigMap" -}}
{{- if .Values.placement.existingConfigMap }}
{{- .Values.placement.existingConfigMap }}
{{- else if .Values.placement.json }}
{{- include "switchyard.fullname" . }}-placement
{{- end }}
{{- end }}

{{- define "switchyard.resources" -}}
{{- $list := dict "cpu" (toString .cpu) "memory" (toString .memory) }}
{{- if gt (int (default 0 .gpu)) 0 }}
{{- $_ := set $list "nvidia.com/gpu" (int .gpu) }}
{{- end -}}
requests:
  {{- toYaml $list | nindent 2 }}
limits:
  {{- toYaml $list | nindent 2 }}
{{- end }}

{{- define "switchyard.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "switchyard.securityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{/* Volumes of every Ray pod: the model (a PVC, or an emptyDir the download fills) and the placement file. */}}
{{- define "switchyard.volumes" -}}
- name: model
{{- if .Values.model.uri }}
  emptyDir: {{ if .Values.model.download.sizeLimit }}{sizeLimit: {{ .Values.model.download.sizeLimit }}}{{ else }}{}{{ end }}
{{- else }}
  persistentVolumeClaim:
    claimName: {{ .Values.model.pvc.claimName }}
    readOnly: true
{{- end }}
{{- with include "switchyard.placementConfigMap" . }}
- name: placement
  configMap:
    name: {{ . }}
    items:
      - key: placement.json
        path: {{ base $.Values.switchyard.placement }}
{{- end }}
{{- end }}

{{/* Mounts that put the model at `switchyard.model` and the placement file at `switchyard.placement`. */}}
{{- define "switchyard.volumeMounts" -}}
- name: model
  mountPath: {{ .Values.switchyard.model }}
  readOnly: true
  {{- if and (not .Values.model.uri) .Values.model.pvc.subPath }}
  subPath: {{ .Values.model.pvc.subPath }}
  {{- end }}
{{- if include "switchyard.placementConfigMap" . }}
- name: placement
  mountPath: {{ dir .Values.switchyard.placement }}
  readOnly: true
{{- end }}
{{- end }}

{{/* With `model.uri`: copy the model folder into the `model` emptyDir before Ray starts. */}}
{{- define "switchyard.initContainers" -}}
{{- if .Values.model.uri }}
{{- $remote := .Values.model.uri | replace "s3://" ":s3:" | replace "gs://" ":gcs:" -}}
- name: download-model
  image: {{ .Values.model.download.image }}
  args: [copy, {{ $remote | quote }}, {{ .Values.switchyard.model | quote }}, --s3-env-auth, --gcs-env-auth,
         --transfers=16, --checkers=16]
  env:
    - name: HOME
      value: /tmp
    {{- with .Values.model.download.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.model.download.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  resources:
    {{- include "switchyard.resources" .Values.model.download.resources | nindent 4 }}
  securityContext:
    {{- include "switchyard.securityContext" . | nindent 4 }}
  volumeMounts:
    - name: model
      mountPath: {{ .Values.switchyard.model }}
{{- end }}
{{- end }}

{{/*
One Ray pod template. Arguments: root (the chart's context), node (head, routerWorkers, an expertWorkers
item or a pool's worker group), role ("head" or "worker"). KubeRay adds the `ray start` command, /dev/shm, and
its own probes where none is set.
*/}}
{{- define "switchyard.podTemplate" -}}
{{- $root := .root }}
{{- $values := $root.Values }}
{{- $head := eq .role "head" }}
{{- $annotations := dict }}
{{- if $values.placement.json }}
{{- /* A new placement file makes a new pod template: KubeRay then rolls out a new cluster. */}}
{{- $_ := set $annotations "checksum/placement" (sha256sum $values.placement.json) }}
{{- end }}
{{- $annotations = merge $annotations (default (dict) $values.podAnnotations) -}}
metadata:
  labels:
    {{- include "switchyard.selectorLabels" $root | nindent 4 }}
    switchyard.io/node-group: {{ if $head }}head{{ else }}{{ .node.groupName }}{{ end }}
    {{- with $values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  securityContext:
    {{- include "switchyard.podSecurityContext" $root | nindent 4 }}
  {{- with $values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with include "switchyard.initContainers" $root }}
  initContainers:
    {{- . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ if $head }}ray-head{{ else }}ray-worker{{ end }}
      image: {{ include "switchyard.image" $root }}
      imagePullPolicy: {{ $values.image.pullPolicy }}
      ports:
        {{- if $head }}
        - {name: gcs-server, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        {{- end }}
        - {name: serve, containerPort: {{ $values.serve.port }}}
      resources:
        {{- include "switchyard.resources" .node.resources | nindent 8 }}
      securityContext:
        {{- include "switchyard.securityContext" $root | nindent 8 }}
      {{- if or $values.env $values.apiKey.existingSecret }}
      env:
        {{- with $values.apiKey.existingSecret }}
        - name: SWITCHYARD_API_KEY
          valueFrom:
            secretKeyRef: {name: {{ . | quote }}, key: {{ $values.apiKey.secretKey | quote }}}
        {{- end }}
        {{- with $values.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      volumeMounts:
        {{- include "switchyard.volumeMounts" $root | nindent 8 }}
      {{- if and (not $head) $values.probes.readinessPath }}
      readinessProbe:
        httpGet:
          path: {{ $values.probes.readinessPath }}
          port: serve
        periodSeconds: {{ $values.probes.periodSeconds }}
        timeoutSeconds: {{ $values.probes.timeoutSeconds }}
        failureThreshold: {{ $values.probes.failureThreshold }}
      {{- end }}
  volumes:
    {{- include "switchyard.volumes" $root | nindent 4 }}
  {{- with .node.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .node.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .node.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* A worker group of the RayCluster; num-gpus comes from the pod's GPU limit, so the two cannot differ. */}}
{{- define "switchyard.workerGroup" -}}
{{- $node := .node -}}
- groupName: {{ $node.groupName }}
  replicas: {{ $node.minReplicas }}
  minReplicas: {{ $node.minReplicas }}
  maxReplicas: {{ $node.maxReplicas }}
  rayStartParams:
    {{- toYaml (merge (dict "num-gpus" (toString (int $node.resources.gpu))) (default (dict) $node.rayStartParams)) | nindent 4 }}
  {{- with $node.rayLabels }}
  labels:
    {{- range $key, $value := . }}
    {{ $key }}: {{ $value | toString | quote }}
    {{- end }}
  {{- end }}
  {{- with $node.rayResources }}
  resources:
    {{- range $name, $amount := . }}
    {{ $name }}: {{ $amount | toString | quote }}
    {{- end }}
  {{- end }}
  template:
    {{- include "switchyard.podTemplate" . | nindent 4 }}
{{- end }}
