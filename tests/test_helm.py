"""The Helm chart, linted and rendered offline with the real Helm SDK (`helm_python`; no cluster, no `helm`).

Checks: lint; the rendered RayService against KubeRay's CRD schema (unknown fields refused, as `kubectl
apply` does); its serveConfigV2 against Ray Serve's schema and its app args against `AppConfig`; the cluster's
shape (head without GPUs, autoscaling, GPU worker groups, mounts where the app reads, non-root); one worker
group per expert pool, which that pool's replicas alone fit; that configs/serve.yaml and the schema's AppConfig
are up to date; and that bad values are refused by name.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import posixpath
import re
from pathlib import Path

import pytest
import yaml

helm = pytest.importorskip("helm_python")
jsonschema = pytest.importorskip("jsonschema")

from ray.serve.schema import ServeDeploySchema  # noqa: E402

from switchyard.configs.serve import AppConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm"
CRD = ROOT.parent / "shared" / "data" / "k8s" / "ray.io_rayservices.yaml"

_spec = importlib.util.spec_from_file_location("render_serve_config", ROOT / "scripts" / "render_serve_config.py")
render_serve_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_serve_config)

DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
GPU_EXAMPLE = yaml.safe_load((CHART / "values-gpu-example.yaml").read_text())
VALUE_SETS = {"defaults": {}, "gpu-example": GPU_EXAMPLE}


def render(values: dict) -> list[dict]:
    return render_serve_config.objects(render_serve_config.render_chart(values))


def merged_values(values: dict) -> dict:
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(values)


def the(objects: list[dict], kind: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def pod_templates(rayservice: dict) -> list[dict]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]


def app_args(rayservice: dict) -> dict:
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]["args"]


@pytest.fixture(scope="module", params=list(VALUE_SETS))
def rendered(request) -> tuple[dict, list[dict]]:
    values = VALUE_SETS[request.param]
    return merged_values(values), render(values)


# -- KubeRay's CRD -----------------------------------------------------------------------------------------
def _strict(schema: dict) -> dict:
    """A structural CRD schema with unknown fields refused. The API server would prune them silently (or,
    with `kubectl apply`'s strict field validation, refuse them): either way a typo here is a bug."""
    out = dict(schema)
    if "properties" in schema:
        out["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict(schema["additionalProperties"])
    if isinstance(schema.get("items"), dict):
        out["items"] = _strict(schema["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            out[key] = [_strict(s) for s in schema[key]]
    return out


@pytest.fixture(scope="module")
def rayservice_validator():
    if not CRD.is_file():
        pytest.skip(f"KubeRay's CRD is not at {CRD} (CI has ../shared beside the repository)")
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(_strict(v1["schema"]["openAPIV3Schema"]))


def test_strict_schema_refuses_unknown_fields():
    schema = _strict({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {}}}}})
    validator = jsonschema.Draft7Validator(schema)
    assert validator.is_valid({"a": {"b": 1}})
    assert not validator.is_valid({"a": {"c": 1}})


# -- lint and render ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_chart_lints_clean(name):
    report = helm.lint(CHART, VALUE_SETS[name], strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 = warning, 3 = error
    assert report["errors"] == [] and problems == [], problems


def crd_errors(validator, rayservice: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(rayservice)]


def test_rayservice_validates_against_kuberay_crd(rendered, rayservice_validator):
    _, objects = rendered
    rayservice = the(objects, "RayService")
    assert rayservice["apiVersion"] == "ray.io/v1"
    assert crd_errors(rayservice_validator, rayservice) == []


def test_serve_config_is_a_serve_deploy_config_of_the_switchyard_app(rendered):
    values, objects = rendered
    raw = yaml.safe_load(the(objects, "RayService")["spec"]["serveConfigV2"])
    schema = ServeDeploySchema.model_validate(raw)
    (app,) = schema.applications
    assert app.import_path == "switchyard.cluster.app:build_app"
    AppConfig.model_validate(app.args)
    assert app.args == values["switchyard"]  # the values, unchanged: one source for chart and serve.yaml


def test_cluster_shape(rendered):
    values, objects = rendered
    cluster = the(objects, "RayService")["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    router, *experts = cluster["workerGroupSpecs"]
    assert router["groupName"] == values["routerWorkers"]["groupName"]
    assert len(experts) == len(values["expertWorkers"]) >= 1
    for group in cluster["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        gpus = container["resources"]["limits"].get("nvidia.com/gpu", 0)
        assert group["rayStartParams"]["num-gpus"] == str(gpus)
        assert 0 <= group["minReplicas"] <= group["maxReplicas"]
        assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "serve"}
    for group in experts:
        assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] >= 1
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
            group["template"]["spec"]["tolerations"]
    # The expert groups' nodes can hold every Serve replica that autoscaling may ask for.
    config = AppConfig.model_validate(values["switchyard"])
    pool = config.expert_pool
    most = pool.autoscaling.max_replicas if pool.autoscaling else pool.num_replicas
    gpu_slots = sum(g["maxReplicas"] * g["resources"]["gpu"] for g in values["expertWorkers"])
    assert gpu_slots >= config.num_groups * most * pool.num_gpus


def test_pods_run_as_non_root_with_resource_requests(rendered):
    _, objects = rendered
    rayservice = the(objects, "RayService")
    autoscaler = rayservice["spec"]["rayClusterConfig"]["autoscalerOptions"]
    containers = [autoscaler]
    for template in pod_templates(rayservice):
        pod = template["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 1000
        containers += template["spec"]["containers"] + template["spec"].get("initContainers", [])
    for container in containers:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])


def _mounts(template: dict) -> dict[str, dict]:
    (container,) = template["spec"]["containers"]
    return {m["name"]: m for m in container["volumeMounts"]}


def _volumes(template: dict) -> dict[str, dict]:
    return {v["name"]: v for v in template["spec"]["volumes"]}


def test_model_and_placement_are_mounted_where_the_app_reads_them(rendered):
    values, objects = rendered
    rayservice = the(objects, "RayService")
    args = app_args(rayservice)
    for template in pod_templates(rayservice):
        mounts, volumes = _mounts(template), _volumes(template)
        assert mounts["model"]["mountPath"] == args["model"]
        assert mounts["model"].get("subPath", "") == values["model"]["pvc"]["subPath"]
        assert volumes["model"]["persistentVolumeClaim"]["claimName"] == values["model"]["pvc"]["claimName"]
        if args.get("placement"):
            assert mounts["placement"]["mountPath"] == posixpath.dirname(args["placement"])
            (item,) = volumes["placement"]["configMap"]["items"]
            assert item == {"key": "placement.json", "path": posixpath.basename(args["placement"])}
        else:
            assert "placement" not in mounts


@pytest.mark.parametrize("size_limit", ["", "40Gi"])
def test_model_uri_is_downloaded_by_an_init_container(size_limit, rayservice_validator):
    objects = render({"model": {"pvc": {"claimName": ""}, "uri": "s3://models/olmoe",
                                "download": {"sizeLimit": size_limit}}})
    rayservice = the(objects, "RayService")
    assert crd_errors(rayservice_validator, rayservice) == []
    model = app_args(rayservice)["model"]
    for template in pod_templates(rayservice):
        (init,) = template["spec"]["initContainers"]
        assert init["args"][:3] == ["copy", ":s3:models/olmoe", model]
        assert init["volumeMounts"] == [{"name": "model", "mountPath": model}]
        assert _volumes(template)["model"] == {"name": "model",
                                               "emptyDir": {"sizeLimit": size_limit} if size_limit else {}}


def test_placement_json_from_values_becomes_a_configmap(rayservice_validator):
    placement = {"groups": [{"name": "a", "experts": {"0": [0, 1]}}, {"name": "b", "experts": {"0": [2, 3]}}]}
    objects = render({"placement": {"json": json.dumps(placement, indent=1)},
                      "switchyard": {"placement": "/etc/switchyard/placement.json"}})
    configmap = the(objects, "ConfigMap")
    assert json.loads(configmap["data"]["placement.json"]) == placement
    rayservice = the(objects, "RayService")
    assert crd_errors(rayservice_validator, rayservice) == []
    for template in pod_templates(rayservice):
        assert _volumes(template)["placement"]["configMap"]["name"] == configmap["metadata"]["name"]
        assert "checksum/placement" in template["metadata"]["annotations"]  # a new file rolls the cluster


def test_ingress_routes_to_kuberays_serve_service():
    objects = render(GPU_EXAMPLE)
    service = the(objects, "RayService")["spec"]["serveService"]
    backend = the(objects, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"number": service["spec"]["ports"][0]["port"]}}
    assert "Ingress" not in {o["kind"] for o in render({})}


def test_grafana_dashboard_configmap_holds_the_dashboard_json():
    dashboard = (CHART / "dashboards" / "switchyard.json").read_text()
    objects = render({"grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "LLM"}}})
    configmap = the(objects, "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"  # what Grafana's sidecar selects by
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "LLM"}
    assert configmap["metadata"]["namespace"] == "default"
    assert configmap["data"]["switchyard.json"] == dashboard.rstrip("\n")  # the file, unchanged
    assert json.loads(configmap["data"]["switchyard.json"])["uid"] == "switchyard"
    assert "ConfigMap" not in {o["kind"] for o in render({})}  # off by default
    moved = the(render({"grafanaDashboard": {"enabled": True, "namespace": "monitoring"}}), "ConfigMap")
    assert moved["metadata"]["namespace"] == "monitoring"


# -- generated files are up to date ------------------------------------------------------------------------
def test_serve_yaml_is_the_charts_serve_config():
    assert (ROOT / "configs" / "serve.yaml").read_text() == render_serve_config.serve_config_text(), \
        "configs/serve.yaml is stale: run `python scripts/render_serve_config.py`"


def test_values_schema_checks_switchyard_with_app_config():
    assert (CHART / "values.schema.json").read_text() == render_serve_config.schema_text(), \
        "helm/values.schema.json's AppConfig is stale: run `python scripts/render_serve_config.py`"


def test_every_value_is_documented():
    """Every value of values.yaml has a `# --` comment block right above it (the helm-docs convention that
    KubeRay's chart follows): each leaf, or a map or list documented as a whole."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented, documented_indent = [], None
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if documented_indent is not None and indent > documented_indent:
            continue  # inside a value documented as a whole
        documented_indent = None
        key = re.match(r"\s*([\w./-]+):(.*)$", line)
        if not key:
            continue
        j = i - 1
        while j >= 0 and lines[j].lstrip().startswith("#") and not lines[j].lstrip().startswith("# --"):
            j -= 1
        if j >= 0 and lines[j].lstrip().startswith("# --"):
            documented_indent = indent
            continue
        following = next((l for l in lines[i + 1:] if l.strip() and not l.lstrip().startswith("#")), "")
        is_map = not key.group(2).strip() and not following.lstrip().startswith("- ")
        if not is_map:  # a leaf: its value on its line, or a list below it
            undocumented.append(f"line {i + 1}: {line.strip()}")
    assert undocumented == []


# -- bad values are refused, naming what to fix ------------------------------------------------------------
def _expert_group(**change) -> dict:
    group = copy.deepcopy(DEFAULTS["expertWorkers"][0])
    group.update(change)
    return group


@pytest.mark.parametrize("values,error,message", [
    ({"expertWorkers": [_expert_group(minReplicas=-1)]}, "HelmValuesError", "/expertWorkers/0/minReplicas'.*minimum"),
    ({"routerWorkers": {"maxReplicas": -2}}, "HelmValuesError", "/routerWorkers/maxReplicas'.*minimum"),
    ({"switchyard": {"expert_pool": {"num_replicas": -1}}}, "HelmValuesError",
     "/switchyard/expert_pool/num_replicas'.*minimum"),
    ({"switchyard": {"model": None}}, "HelmValuesError", "/switchyard'.*missing property 'model'"),
    ({"switchyard": {"model": "models/x"}}, "HelmValuesError", "/switchyard/model'.*does not match"),
    ({"switchyard": {"num_gpus": 1}}, "HelmValuesError", "/switchyard'.*additional properties 'num_gpus'"),
    ({"switchyard": {"router": {"transport": "pigeon"}}}, "HelmValuesError", "/switchyard/router/transport'"),
    ({"switchyard": {"telemetry": {"otlp_traces_endpoint": "collector:4318"}}}, "HelmValuesError",
     "/switchyard/telemetry/otlp_traces_endpoint'"),
    ({"model": {"uri": "https://example.com/m"}}, "HelmValuesError", "/model/uri'.*does not match"),
    ({"grafanaDashboard": {"enabled": "yes"}}, "HelmValuesError", "/grafanaDashboard/enabled'"),
    ({"model": {"pvc": {"claimName": ""}}}, "HelmRenderError", "no model to serve; set model.pvc.claimName"),
    ({"model": {"uri": "s3://b/m"}}, "HelmRenderError", "set exactly one of model.pvc.claimName and model.uri"),
    ({"routerWorkers": {"minReplicas": 3, "maxReplicas": 2}}, "HelmRenderError",
     "worker group router: minReplicas \\(3\\) > maxReplicas \\(2\\)"),
    ({"expertWorkers": [_expert_group(groupName="router")]}, "HelmRenderError", "router is used twice"),
    ({"switchyard": {"placement": "/etc/switchyard/placement.json"}}, "HelmRenderError",
     "no file is given; set placement.json"),
    ({"placement": {"existingConfigMap": "p"}}, "HelmRenderError", "set switchyard.placement to the path"),
    ({"placement": {"json": '{"groups": [{"experts": {}}]}'}, "switchyard": {"placement": "/etc/p/p.json"}},
     "HelmRenderError", "placement.json has 1 groups but switchyard.num_groups is 2"),
    ({"placement": {"json": '{"groups": ['}, "switchyard": {"placement": "/etc/p/p.json"}},
     "HelmRenderError", "placement.json is not JSON"),
    ({"switchyard": {"placement": "/models/model/placement.json"}, "placement": {"existingConfigMap": "p"}},
     "HelmRenderError", "outside the model folder"),
    ({"switchyard": {"expert_pool": {"num_gpus": 2}}}, "HelmRenderError",
     "expert_pool.num_gpus \\(2\\) is more than any expert worker group has"),
    ({"switchyard": {"api_keys": ["plain"]}}, "HelmRenderError", "put them in a Secret and set apiKey.existingSecret"),
])
def test_bad_values_are_refused_with_a_clear_message(values, error, message):
    with pytest.raises(helm.HelmError) as err:
        render(values)
    assert type(err.value).__name__ == error
    assert re.search(message, str(err.value)), str(err.value)


def test_lint_reports_values_that_break_the_schema():
    report = helm.lint(CHART, {"routerWorkers": {"minReplicas": -1}})
    assert any("/routerWorkers/minReplicas" in e for e in report["errors"])


def test_api_key_comes_from_a_secret_into_every_ray_container(rayservice_validator):
    rayservice = the(render({"apiKey": {"existingSecret": "llm-keys", "secretKey": "keys"},
                             "env": [{"name": "X", "value": "1"}]}), "RayService")
    assert crd_errors(rayservice_validator, rayservice) == []
    for template in pod_templates(rayservice):
        (container,) = template["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["SWITCHYARD_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "llm-keys", "key": "keys"}}
        assert "value" not in env["SWITCHYARD_API_KEY"] and env["X"]["value"] == "1"
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "api_keys" not in app_args(rayservice)
    for template in pod_templates(the(render({}), "RayService")):  # no Secret: no key, the API open
        assert "SWITCHYARD_API_KEY" not in str(template)


def test_the_otlp_traces_endpoint_value_reaches_every_replica(rayservice_validator):
    from switchyard.cluster.observability.tracing import replica_env

    url = "http://otel-collector.observability:4318"
    objects = render({"switchyard": {"telemetry": {"otlp_traces_endpoint": url}}})
    rayservice = the(objects, "RayService")
    assert crd_errors(rayservice_validator, rayservice) == []
    config = AppConfig.model_validate(app_args(rayservice))
    assert config.telemetry.otlp_traces_endpoint == url
    # build_app gives the router's and every group's replicas this environment
    assert replica_env(config.telemetry.otlp_traces_endpoint, {}) == {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{url}/v1/traces"}
    assert AppConfig.model_validate(app_args(the(render({}), "RayService"))).telemetry.otlp_traces_endpoint is None


# -- pools on node types -------------------------------------------------------------------------------------
def _per_group_workers(groups: int) -> list[dict]:
    return [_expert_group(groupName=f"experts-{g}", rayLabels={"switchyard.io/expert-group": str(g)},
                          rayResources={"expert-node": 1}) for g in range(groups)]


def test_each_expert_group_gets_a_worker_group_by_label(rayservice_validator):
    values = {"expertWorkers": _per_group_workers(2),
              "routerWorkers": {"rayLabels": {"switchyard.io/node-type": "router"}},
              "switchyard": {"expert_pool": {"nodes": {"label_selector": {"switchyard.io/expert-group": "{group}"},
                                                       "resources": {"expert-node": 1},
                                                       "max_replicas_per_node": 1}},
                             "router_pool": {"nodes": {"label_selector": {"switchyard.io/node-type": "router"}}}}}
    rayservice = the(render(values), "RayService")
    assert crd_errors(rayservice_validator, rayservice) == []
    router, *experts = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert router["labels"] == {"switchyard.io/node-type": "router"} and "resources" not in router
    assert [g["labels"] for g in experts] == [{"switchyard.io/expert-group": "0"}, {"switchyard.io/expert-group": "1"}]
    assert all(g["resources"] == {"expert-node": "1"} for g in experts)
    args = app_args(rayservice)
    assert args["expert_pool"]["nodes"]["label_selector"] == {"switchyard.io/expert-group": "{group}"}
    from switchyard.configs.serve import AppConfig

    options = AppConfig.model_validate(args).expert_pool.deployment_options(1)
    assert options["ray_actor_options"]["label_selector"] == {"switchyard.io/expert-group": "1"}
    assert options["max_replicas_per_node"] == 1


@pytest.mark.parametrize("values,message", [
    ({"expertWorkers": _per_group_workers(1),
      "switchyard": {"expert_pool": {"nodes": {"label_selector": {"switchyard.io/expert-group": "{group}"}}}}},
     r"switchyard.expert_pool.nodes.label_selector: switchyard.io/expert-group=1 \(group 1\) is a label of no "
     r"expertWorkers group"),
    ({"switchyard": {"expert_pool": {"nodes": {"resources": {"expert-node": 1}}}}},
     r"switchyard.expert_pool.nodes.resources: expert-node: 1 \(group 0\) is more than any expertWorkers group"),
    ({"switchyard": {"router_pool": {"nodes": {"label_selector": {"tier": "router"}}}}},
     r"switchyard.router_pool.nodes.label_selector: tier=router \(group 0\) is a label of no routerWorkers group"),
])
def test_a_node_placement_no_worker_group_offers_is_refused(values, message):
    with pytest.raises(helm.HelmError) as err:
        render(values)
    assert re.search(message, str(err.value)), str(err.value)


def test_a_bad_node_placement_is_refused_by_the_schema():
    with pytest.raises(helm.HelmError) as err:
        render({"switchyard": {"expert_pool": {"nodes": {"max_replicas_per_node": 0}}}})
    assert "/switchyard/expert_pool/nodes/max_replicas_per_node" in str(err.value)


# -- expert pools per node type (expertPools) ---------------------------------------------------------------
_GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
# Groups 0-1 hot on H100 nodes, 2-3 cold on CPU nodes at a sixth of the price, group 4 in no pool (expertWorkers).
HOT_POOL = {"name": "hot", "groups": [0, 1], "replica_per_hour": 3.0,
            "autoscaling": {"min_replicas": 1, "max_replicas": 4},
            "workers": {"resources": {"cpu": "16", "memory": "128Gi", "gpu": 1}, "tolerations": [_GPU_TOLERATION],
                        "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
                        "rayResources": {"h100": 1}},
            "nodes": {"resources": {"h100": 1}}}
COLD_POOL = {"name": "cold", "groups": [2, 3], "device": "cpu", "num_cpus": 8, "num_gpus": 0, "replica_per_hour": 0.5,
             "autoscaling": {"min_replicas": 1, "max_replicas": 2},
             "workers": {"resources": {"cpu": "16", "memory": "64Gi", "gpu": 0},
                         "nodeSelector": {"node.kubernetes.io/instance-type": "c7i.4xlarge"},
                         "rayLabels": {"switchyard.io/cpu": "c7i"}},
             "nodes": {"label_selector": {"switchyard.io/cpu": "c7i"}, "max_replicas_per_node": 1}}
POOLS = {"switchyard": {"num_groups": 5}, "expertPools": [HOT_POOL, COLD_POOL]}


def _takes(group: dict, options: dict) -> bool:
    """Whether a node of this worker group could take a replica with these Ray actor options: its labels match
    the selector, and it offers the custom resources and GPUs."""
    labels, offered = group.get("labels", {}), group.get("resources", {})
    return all(labels.get(k) == v for k, v in options.get("label_selector", {}).items()) \
        and all(float(offered.get(k, 0)) >= amount for k, amount in options.get("resources", {}).items()) \
        and float(group["rayStartParams"]["num-gpus"]) >= options["num_gpus"]


def test_one_worker_group_per_pool(rayservice_validator):
    rayservice = the(render(POOLS), "RayService")
    assert crd_errors(rayservice_validator, rayservice) == []
    groups = {g["groupName"]: g for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    assert list(groups) == ["router", "experts-gpu", "hot", "cold"]
    hot, cold = groups["hot"], groups["cold"]
    # a pod per replica: each group's min_replicas..max_replicas, times the pool's 2 groups
    assert (hot["minReplicas"], hot["maxReplicas"]) == (2, 8) and hot["replicas"] == 2
    assert (cold["minReplicas"], cold["maxReplicas"]) == (2, 4)
    assert hot["labels"] == {"switchyard.io/expert-pool": "hot"} and hot["resources"] == {"h100": "1"}
    assert cold["labels"] == {"switchyard.io/cpu": "c7i", "switchyard.io/expert-pool": "cold"}
    assert groups["experts-gpu"]["labels"] == {"switchyard.io/expert-pool": "experts"}
    (hot_pod,), (cold_pod,) = hot["template"]["spec"]["containers"], cold["template"]["spec"]["containers"]
    assert hot_pod["resources"]["limits"] == {"cpu": "16", "memory": "128Gi", "nvidia.com/gpu": 1}
    assert cold_pod["resources"]["limits"] == {"cpu": "16", "memory": "64Gi"}
    assert cold["rayStartParams"]["num-gpus"] == "0"
    assert hot["template"]["spec"]["tolerations"] == [_GPU_TOLERATION] and "tolerations" not in cold["template"]["spec"]
    assert cold["template"]["spec"]["nodeSelector"] == {"node.kubernetes.io/instance-type": "c7i.4xlarge"}
    assert cold["template"]["metadata"]["labels"]["switchyard.io/node-group"] == "cold"


def test_each_pool_selects_exactly_its_worker_group():
    rayservice = the(render(POOLS), "RayService")
    config = AppConfig.model_validate(app_args(rayservice))
    assert config.groups_of_pool() == {"hot": [0, 1], "cold": [2, 3], "experts": [4]}
    assert {name: (p.device, p.replica_per_hour) for name, p in config.pools().items()} == \
        {"hot": ("cuda", 3.0), "cold": ("cpu", 0.5), "experts": ("cuda", 0.0)}
    workers = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    for group in range(config.num_groups):
        pool = config.pool_of_group(group)
        options = pool.pool.deployment_options(group)["ray_actor_options"]
        takers = [w["groupName"] for w in workers if _takes(w, options)]
        assert takers == [{"experts": "experts-gpu"}.get(pool.name, pool.name)], (group, options)
    # the app's pools are the values less `workers`, and the chart's label
    (hot, cold) = app_args(rayservice)["expert_pools"]
    assert {k: v for k, v in cold.items() if k != "nodes"} == {k: v for k, v in COLD_POOL.items()
                                                                 if k not in ("nodes", "workers")}
    assert cold["nodes"]["max_replicas_per_node"] == 1 and hot["nodes"]["resources"] == {"h100": 1}


def test_chart_with_pools_lints_clean():
    report = helm.lint(CHART, POOLS, strict=True)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_group_in_a_pool_leaves_out_expert_workers():
    rayservice = the(render({"expertPools": [{**COLD_POOL, "groups": [0, 1]}]}), "RayService")
    assert [g["groupName"] for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]] == ["router", "cold"]
    args = app_args(rayservice)
    assert "nodes" not in args["expert_pool"]  # no group left to pin
    AppConfig.model_validate(args)


def _pool(base: dict, drop: tuple[str, ...] = (), **change) -> dict:
    """`base` with `change`, less the keys in `drop`."""
    return {k: v for k, v in {**copy.deepcopy(base), **change}.items() if k not in drop}


@pytest.mark.parametrize("values,message", [
    ({"expertPools": [_pool(COLD_POOL, groups=[1, 2])]}, r"expertPools\[0\].groups: 2 is not an expert group "
     r"\(switchyard.num_groups is 2: 0..1\)"),
    ({"expertPools": [_pool(HOT_POOL, groups=[0]), _pool(COLD_POOL, groups=[1, 0])]},
     r"expertPools\[1\].groups: group 0 is already in pool hot"),
    ({"expertPools": [_pool(COLD_POOL, groups=[0]), _pool(COLD_POOL, groups=[1])]},
     r"expertPools\[1\].name: cold is the name of an earlier pool"),
    ({"expertPools": [_pool(COLD_POOL, name="experts")]}, r"expertPools\[0\].name: experts is the pool of the groups"),
    ({"expertPools": [_pool(COLD_POOL, groups=[1], name="router")]}, r"worker group name router is used twice"),
    ({"expertPools": [_pool(COLD_POOL, groups=[1], device="cuda", num_gpus=1)]},
     r"expertPools\[0\] \(cold\) runs on cuda but expertPools\[0\].workers.resources.gpu is 0"),
    ({"expertPools": [_pool(HOT_POOL, num_gpus=0)]},
     r"expertPools\[0\] \(hot\) runs on cuda but expertPools\[0\].num_gpus is 0"),
    ({"expertPools": [_pool(COLD_POOL, groups=[1], drop=("num_gpus",))]},
     r"expertPools\[0\].num_gpus \(1, switchyard.expert_pool's where unset\) is more than a pod of the pool has"),
    ({"expertPools": [_pool(COLD_POOL, groups=[1], nodes={"label_selector": {"switchyard.io/cpu": "graviton"}})]},
     r"expertPools\[0\].nodes.label_selector: switchyard.io/cpu=graviton \(group 1\) is a label of no "
     r"expertPools\[0\].workers group"),
    ({"switchyard": {"expert_pools": [{"name": "cold", "groups": [1]}]}}, r"switchyard.expert_pools: list the pools "
     r"in expertPools instead"),
])
def test_bad_pools_are_refused_naming_the_value(values, message):
    with pytest.raises(helm.HelmError) as err:
        render(values)
    assert type(err.value).__name__ == "HelmRenderError"
    assert re.search(message, str(err.value)), str(err.value)


@pytest.mark.parametrize("pool,path", [
    (_pool(COLD_POOL, drop=("workers",)), r"/expertPools/0'.*missing property 'workers'"),
    (_pool(COLD_POOL, workers={**COLD_POOL["workers"], "maxReplicas": 9}), r"/expertPools/0/workers'.*maxReplicas"),
    (_pool(COLD_POOL, name="cold-"), r"/expertPools/0/name'.*does not match"),
    (_pool(COLD_POOL, replica_per_hour=-1), r"/expertPools/0/replica_per_hour'"),
])
def test_bad_pool_values_are_refused_by_the_schema(pool, path):
    with pytest.raises(helm.HelmError) as err:
        render({"expertPools": [pool]})
    assert type(err.value).__name__ == "HelmValuesError"
    assert re.search(path, str(err.value)), str(err.value)


@pytest.mark.parametrize("change,bounds", [
    ({"autoscaling": None, "num_replicas": 3}, (6, 6)),  # a fixed count
    ({"drop": ("autoscaling",)}, (2, 4)),  # expert_pool's bounds, 1..2
])
def test_pool_worker_bounds_follow_the_apps_replicas(change, bounds):
    values = {"switchyard": {"num_groups": 3}, "expertPools": [_pool(COLD_POOL, groups=[1, 2], **change)]}
    rayservice = the(render(values), "RayService")
    (cold,) = [g for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "cold"]
    assert (cold["minReplicas"], cold["maxReplicas"]) == bounds
    pool = AppConfig.model_validate(app_args(rayservice)).pool_of_group(1).pool
    most = pool.autoscaling.max_replicas if pool.autoscaling else pool.num_replicas
    assert cold["maxReplicas"] == 2 * most
