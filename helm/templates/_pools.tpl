{{/*
Expert pools per node type (`expertPools`). Each item is the app's `expert_pools` entry (configs/pools.py,
`GroupPool`) plus `workers`, the node type its groups run on. The chart makes one worker group per pool, named
after it, and pins the pool to it with one Ray node label on both sides: a pool's replicas could otherwise land on
any node with room (a cold pool's on a hot pool's GPU nodes), and the worker groups' bounds would no longer hold
them. With pools, the groups in no pool (`expert_pool`, the pool "experts": DEFAULT_POOL in configs/pools.py) are
pinned to `expertWorkers` the same way.
*/}}

{{- define "switchyard.poolLabel" -}}
switchyard.io/expert-pool
{{- end }}

{{/* switchyard.num_groups as the app reads it (unset: AppConfig's default, 2; 0 stays 0). */}}
{{- define "switchyard.numGroups" -}}
{{- if hasKey .Values.switchyard "num_groups" }}{{ int .Values.switchyard.num_groups }}{{ else }}2{{ end }}
{{- end }}

{{/* The expert groups in no pool, as a JSON list: those `expertWorkers` runs. */}}
{{- define "switchyard.defaultPoolGroups" -}}
{{- $pooled := list }}
{{- range .Values.expertPools }}
{{- range .groups }}{{ $pooled = append $pooled (int .) }}{{ end }}
{{- end }}
{{- $out := list }}
{{- range $g := until (int (include "switchyard.numGroups" .)) }}
{{- if not (has $g $pooled) }}{{ $out = append $out $g }}{{ end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* `nodes` with the pool label added to its label_selector (the label wins over one of the same key). */}}
{{- define "switchyard.pinnedNodes" -}}
{{- $nodes := deepCopy (default (dict) .nodes) }}
{{- $pin := dict (include "switchyard.poolLabel" .) .name }}
{{- $_ := set $nodes "label_selector" (merge $pin (default (dict) $nodes.label_selector)) }}
{{- toJson $nodes }}
{{- end }}

{{/*
Replicas of each group of a pool, {"min": .., "max": ..}, as the app resolves them: the pool's `autoscaling` when
given (null: a fixed count), else expert_pool's; the bounds' defaults are ExpertAutoscaling's. Arguments: pool,
base (switchyard.expert_pool).
*/}}
{{- define "switchyard.poolReplicas" -}}
{{- $auto := .base.autoscaling }}
{{- if hasKey .pool "autoscaling" }}{{ $auto = .pool.autoscaling }}{{ end }}
{{- if $auto }}
{{- toJson (dict "min" (int (default 1 $auto.min_replicas)) "max" (int (default 3 $auto.max_replicas))) }}
{{- else }}
{{- $n := int (default 1 (ternary .pool.num_replicas .base.num_replicas (hasKey .pool "num_replicas"))) }}
{{- toJson (dict "min" $n "max" $n) }}
{{- end }}
{{- end }}

{{/*
The worker groups of the expert groups, as a JSON list of `switchyard.workerGroup` nodes: `expertWorkers` (left
out when every group is in a pool: their minReplicas would be idle nodes), then one per pool. A pool's pods are
sized for one replica each, so its group's pods go from min_replicas to max_replicas times its groups.
*/}}
{{- define "switchyard.expertWorkerGroups" -}}
{{- $v := .Values }}
{{- $label := include "switchyard.poolLabel" . }}
{{- $out := list }}
{{- if include "switchyard.defaultPoolGroups" . | fromJsonArray }}
{{- range $v.expertWorkers }}
{{- $node := deepCopy . }}
{{- if $v.expertPools }}
{{- $_ := set $node "rayLabels" (merge (dict $label "experts") (default (dict) .rayLabels)) }}
{{- end }}
{{- $out = append $out $node }}
{{- end }}
{{- end }}
{{- $base := default (dict) $v.switchyard.expert_pool }}
{{- range $v.expertPools }}
{{- $replicas := include "switchyard.poolReplicas" (dict "pool" . "base" $base) | fromJson }}
{{- $node := deepCopy .workers }}
{{- $_ := set $node "groupName" .name }}
{{- $_ = set $node "minReplicas" (mul $replicas.min (len .groups)) }}
{{- $_ = set $node "maxReplicas" (mul $replicas.max (len .groups)) }}
{{- $_ = set $node "rayLabels" (merge (dict $label .name) (default (dict) .workers.rayLabels)) }}
{{- $out = append $out $node }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
The app's args: the `switchyard:` values, plus, with pools, `expert_pools` (each item less `workers`, its `nodes`
pinned to its worker group) and expert_pool pinned to `expertWorkers` while some group is in no pool.
*/}}
{{- define "switchyard.appArgs" -}}
{{- $args := deepCopy .Values.switchyard }}
{{- if .Values.expertPools }}
{{- $pools := list }}
{{- range .Values.expertPools }}
{{- $pool := omit . "workers" }}
{{- $_ := set $pool "nodes" (include "switchyard.pinnedNodes" . | fromJson) }}
{{- $pools = append $pools $pool }}
{{- end }}
{{- $_ := set $args "expert_pools" $pools }}
{{- if include "switchyard.defaultPoolGroups" . | fromJsonArray }}
{{- $base := deepCopy (default (dict) $args.expert_pool) }}
{{- $_ = set $base "nodes" (include "switchyard.pinnedNodes" (dict "nodes" $base.nodes "name" "experts") | fromJson) }}
{{- $_ = set $args "expert_pool" $base }}
{{- end }}
{{- end }}
{{- toYaml $args }}
{{- end }}
