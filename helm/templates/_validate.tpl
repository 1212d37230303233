{{/*
Checks that span several values, which values.schema.json cannot express. Each failure says what to set.
*/}}
{{- define "switchyard.validate" -}}
{{- $v := .Values }}
{{- if $v.switchyard.api_keys }}
{{- fail "switchyard.api_keys: API keys are not plain values; put them in a Secret and set apiKey.existingSecret (and apiKey.secretKey)" }}
{{- end }}
{{- if and $v.model.pvc.claimName $v.model.uri }}
{{- fail "model: set exactly one of model.pvc.claimName and model.uri (to use the URI, unset the claim: --set model.pvc.claimName=)" }}
{{- end }}
{{- if not (or $v.model.pvc.claimName $v.model.uri) }}
{{- fail "model: no model to serve; set model.pvc.claimName (a PersistentVolumeClaim holding the model folder) or model.uri (s3://... or gs://...)" }}
{{- end }}
{{- if and $v.placement.json $v.placement.existingConfigMap }}
{{- fail "placement: set at most one of placement.json and placement.existingConfigMap" }}
{{- end }}
{{- $hasFile := or $v.placement.json $v.placement.existingConfigMap }}
{{- if and $hasFile (not $v.switchyard.placement) }}
{{- fail "switchyard.placement: a placement file is given; set switchyard.placement to the path the app reads it from (e.g. /etc/switchyard/placement.json)" }}
{{- end }}
{{- if and $v.switchyard.placement (not $hasFile) }}
{{- fail (printf "switchyard.placement is %s but no file is given; set placement.json (--set-file placement.json=FILE) or placement.existingConfigMap" $v.switchyard.placement) }}
{{- end }}
{{- if and $v.switchyard.placement (hasPrefix (printf "%s/" (clean $v.switchyard.model)) (printf "%s/" (dir $v.switchyard.placement))) }}
{{- fail "switchyard.placement: put the placement file outside the model folder (its folder cannot be mounted inside the read-only model volume)" }}
{{- end }}
{{- if $v.placement.json }}
{{- $placement := fromJson $v.placement.json }}
{{- if hasKey $placement "Error" }}
{{- fail (printf "placement.json is not JSON: %s" $placement.Error) }}
{{- end }}
{{- $groups := len (default (list) $placement.groups) }}
{{- if ne $groups (int $v.switchyard.num_groups) }}
{{- fail (printf "placement.json has %d groups but switchyard.num_groups is %d" $groups (int $v.switchyard.num_groups)) }}
{{- end }}
{{- end }}
{{- include "switchyard.validatePools" . }}
{{- $defaultGroups := include "switchyard.defaultPoolGroups" . | fromJsonArray }}
{{- $groups := prepend (include "switchyard.expertWorkerGroups" . | fromJsonArray) $v.routerWorkers }}
{{- $names := list }}
{{- range $groups }}
{{- if gt (int .minReplicas) (int .maxReplicas) }}
{{- fail (printf "worker group %s: minReplicas (%d) > maxReplicas (%d)" .groupName (int .minReplicas) (int .maxReplicas)) }}
{{- end }}
{{- if has .groupName $names }}
{{- fail (printf "worker group name %s is used twice; routerWorkers, expertWorkers and expertPools (a pool's worker group is named after it) need distinct names" .groupName) }}
{{- end }}
{{- $names = append $names .groupName }}
{{- end }}
{{- $expertGpus := 0 }}
{{- range $v.expertWorkers }}
{{- $expertGpus = max $expertGpus (int .resources.gpu) }}
{{- end }}
{{- $pool := default (dict) $v.switchyard.expert_pool }}
{{- if and $defaultGroups (gt (float64 (default 0 $pool.num_gpus)) (float64 $expertGpus)) }}
{{- fail (printf "switchyard.expert_pool.num_gpus (%v) is more than any expert worker group has (%d GPUs a pod): no node could take an expert-group replica" $pool.num_gpus $expertGpus) }}
{{- end }}
{{- include "switchyard.validateNodes" (dict "field" "switchyard.expert_pool.nodes" "pool" $v.switchyard.expert_pool "workers" $v.expertWorkers "groups" $defaultGroups "what" "expertWorkers") }}
{{- include "switchyard.validateNodes" (dict "field" "switchyard.router_pool.nodes" "pool" $v.switchyard.router_pool "workers" (list $v.routerWorkers) "groups" (list 0) "what" "routerWorkers") }}
{{- $pool = default (dict) $v.switchyard.router_pool }}
{{- if gt (float64 (default 0 $pool.num_gpus)) (float64 $v.routerWorkers.resources.gpu) }}
{{- fail (printf "switchyard.router_pool.num_gpus (%v) is more than a router worker pod has (routerWorkers.resources.gpu = %d)" $pool.num_gpus (int $v.routerWorkers.resources.gpu)) }}
{{- end }}
{{- end }}

{{/*
A pool's node placement must be offered by some worker group, for every expert group ("{group}" filled in):
else its replicas would wait for a node that never comes. Label values with Ray's operators (!v, in(...)) are
left to Ray.
*/}}
{{- define "switchyard.validateNodes" -}}
{{- $nodes := default (dict) (default (dict) .pool).nodes }}
{{- $workers := .workers }}
{{- $field := .field }}
{{- $what := .what }}
{{- range $g := .groups }}
{{- range $key, $value := default (dict) $nodes.label_selector }}
{{- if not (or (hasPrefix "!" $value) (hasPrefix "in(" $value)) }}
{{- $k := replace "{group}" (toString $g) $key }}
{{- $want := replace "{group}" (toString $g) $value }}
{{- $found := false }}
{{- range $workers }}
{{- if eq (toString (get (default (dict) .rayLabels) $k)) $want }}{{- $found = true }}{{- end }}
{{- end }}
{{- if not $found }}
{{- fail (printf "%s.label_selector: %s=%s (group %d) is a label of no %s group; add it to one's rayLabels" $field $k $want (int $g) $what) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $key, $amount := default (dict) $nodes.resources }}
{{- $name := replace "{group}" (toString $g) $key }}
{{- $found := false }}
{{- range $workers }}
{{- if ge (float64 (default 0 (get (default (dict) .rayResources) $name))) (float64 $amount) }}{{- $found = true }}{{- end }}
{{- end }}
{{- if not $found }}
{{- fail (printf "%s.resources: %s: %v (group %d) is more than any %s group offers in rayResources" $field $name $amount (int $g) $what) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The pools of `expertPools` (_pools.tpl): each names groups of the app, in one pool at most; a name of its own; and
pods that hold one replica (its GPUs; on cuda, some). The app refuses some of these too, but only once the cluster
is up: here they fail the install, naming the value.
*/}}
{{- define "switchyard.validatePools" -}}
{{- $v := .Values }}
{{- if hasKey $v.switchyard "expert_pools" }}
{{- fail "switchyard.expert_pools: list the pools in expertPools instead, each with its workers (the chart makes their worker groups and passes the pools to the app)" }}
{{- end }}
{{- $numGroups := int (include "switchyard.numGroups" .) }}
{{- $base := default (dict) $v.switchyard.expert_pool }}
{{- $names := list }}
{{- $owner := dict }}
{{- range $i, $p := $v.expertPools }}
{{- $field := printf "expertPools[%d]" $i }}
{{- if eq $p.name "experts" }}
{{- fail (printf "%s.name: experts is the pool of the groups in no pool (switchyard.expert_pool); name it otherwise" $field) }}
{{- end }}
{{- if has $p.name $names }}
{{- fail (printf "%s.name: %s is the name of an earlier pool; each pool needs its own" $field $p.name) }}
{{- end }}
{{- $names = append $names $p.name }}
{{- range $g := $p.groups }}
{{- if or (lt (int $g) 0) (ge (int $g) $numGroups) }}
{{- fail (printf "%s.groups: %d is not an expert group (switchyard.num_groups is %d: 0..%d)" $field (int $g) $numGroups (sub $numGroups 1)) }}
{{- end }}
{{- with get $owner (toString (int $g)) }}
{{- fail (printf "%s.groups: group %d is already in pool %s; a group runs in one pool" $field (int $g) .) }}
{{- end }}
{{- $_ := set $owner (toString (int $g)) $p.name }}
{{- end }}
{{- $device := coalesce $p.device $v.switchyard.expert_device $v.switchyard.device "cpu" }}
{{- $gpus := float64 (default 0 (ternary $p.num_gpus $base.num_gpus (hasKey $p "num_gpus"))) }}
{{- $podGpus := int $p.workers.resources.gpu }}
{{- if and (eq $device "cuda") (eq $podGpus 0) }}
{{- fail (printf "%s (%s) runs on cuda but %s.workers.resources.gpu is 0: give its pods a GPU, or set %s.device: cpu" $field $p.name $field $field) }}
{{- end }}
{{- if and (eq $device "cuda") (eq $gpus 0.0) }}
{{- fail (printf "%s (%s) runs on cuda but %s.num_gpus is 0: give each replica a GPU (1, or a share), or set %s.device: cpu" $field $p.name $field $field) }}
{{- end }}
{{- if gt $gpus (float64 $podGpus) }}
{{- fail (printf "%s.num_gpus (%v, switchyard.expert_pool's where unset) is more than a pod of the pool has (%s.workers.resources.gpu = %d): no node could take a replica; a CPU pool sets num_gpus: 0" $field $gpus $field $podGpus) }}
{{- end }}
{{- include "switchyard.validateNodes" (dict "field" (printf "%s.nodes" $field) "pool" $p "workers" (list $p.workers) "groups" $p.groups "what" (printf "%s.workers" $field)) }}
{{- end }}
{{- end }}
