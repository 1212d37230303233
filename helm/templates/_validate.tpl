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
{{- $groups := prepend $v.expertWorkers $v.routerWorkers }}
{{- $names := list }}
{{- range $groups }}
{{- if gt (int .minReplicas) (int .maxReplicas) }}
{{- fail (printf "worker group %s: minReplicas (%d) > maxReplicas (%d)" .groupName (int .minReplicas) (int .maxReplicas)) }}
{{- end }}
{{- if has .groupName $names }}
{{- fail (printf "worker group name %s is used twice; routerWorkers and expertWorkers need distinct groupName" .groupName) }}
{{- end }}
{{- $names = append $names .groupName }}
{{- end }}
{{- $expertGpus := 0 }}
{{- range $v.expertWorkers }}
{{- $expertGpus = max $expertGpus (int .resources.gpu) }}
{{- end }}
{{- $pool := default (dict) $v.switchyard.expert_pool }}
{{- if gt (float64 (default 0 $pool.num_gpus)) (float64 $expertGpus) }}
{{- fail (printf "switchyard.expert_pool.num_gpus (%v) is more than any expert worker group has (%d GPUs a pod): no node could take an expert-group replica" $pool.num_gpus $expertGpus) }}
{{- end }}
{{- $groupCount := int (default 2 $v.switchyard.num_groups) }}
{{- include "switchyard.validateNodes" (dict "field" "switchyard.expert_pool.nodes" "pool" $v.switchyard.expert_pool "workers" $v.expertWorkers "groups" (until $groupCount) "what" "expertWorkers") }}
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
