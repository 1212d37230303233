"""The checked-in Serve config files are valid Ray Serve configs whose args are valid Switchyard app configs."""

from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from switchyard.cluster.cli.serve import load_app_args
from switchyard.cluster.dispatch.placement_tables import GroupChooser, load_placement
from switchyard.router.affinity.strategies import round_robin
from switchyard.configs.model import ConfigError
from switchyard.configs.serve import AppConfig
from switchyard.experts.checkpoint import Checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["local.yaml", "serve.yaml"])
def test_serve_config_files_validate(name):
    raw = yaml.safe_load((CONFIGS / name).read_text())
    schema = ServeDeploySchema.model_validate(raw) if hasattr(ServeDeploySchema, "model_validate") \
        else ServeDeploySchema.parse_obj(raw)
    app = schema.applications[0]
    assert app.import_path == "switchyard.cluster.app:build_app"
    config = AppConfig.model_validate(app.args)
    assert config.num_groups >= 1
    assert load_app_args(str(CONFIGS / name)) == app.args


@pytest.mark.parametrize("change,field", [
    ({"num_groups": -1}, "num_groups"),
    ({"expert_pool": {"num_replicas": -1}}, "expert_pool.num_replicas"),
    ({"router": {"transport": "carrier-pigeon"}}, "router.transport"),
    ({"expert_pool": {"autoscaling": {"min_replicas": 3, "max_replicas": 1}}}, "expert_pool.autoscaling"),
    ({"expert_pool": {"autoscaling": {"target_ongoing_requests": 2}}}, "expert_pool.autoscaling"),
    ({"expert_pool": {"autoscaling": {"min_replicas": 0}}}, "expert_pool.autoscaling.min_replicas"),
    ({"expert_pool": {"autoscaling": {"target_utilization": 1.5}}}, "expert_pool.autoscaling.target_utilization"),
    ({"expert_pool": {"autoscaling": {"metrics_interval_s": 3, "look_back_period_s": 2}}}, "expert_pool.autoscaling"),
    ({"expert_pool": {"autoscaling": {"max_cost_per_hour": 5}}}, "prices.expert_replica_per_hour"),
    ({"expert_pool": {"autoscaling": {"max_cost_per_hour": 5}}, "prices": {"expert_replica_per_hour": 3}},
     "max_cost_per_hour"),
    ({"model": ""}, "model"),
    ({"unknown_field": 1}, "unknown_field"),
    ({"router": {"adaptive_routing": {"mode": "threshold", "value": 2.0}}}, "router.adaptive_routing"),
    ({"expert_pool": {"nodes": {"label_selector": {"switchyard.io/expert-group": "in(0,"}}}},
     "expert_pool.nodes.label_selector"),
    ({"expert_pool": {"nodes": {"label_selector": {"bad key!": "x"}}}}, "expert_pool.nodes.label_selector"),
    ({"expert_pool": {"nodes": {"resources": {"GPU": 1}}}}, "expert_pool.nodes.resources"),
    ({"expert_pool": {"nodes": {"resources": {"expert-node": 0}}}}, "expert_pool.nodes.resources"),
    ({"expert_pool": {"nodes": {"max_replicas_per_node": 0}}}, "expert_pool.nodes.max_replicas_per_node"),
    ({"expert_pool": {"nodes": {"spread": True}}}, "expert_pool.nodes.spread"),
    ({"router_pool": {"nodes": {"resources": {"group-{group}": 1}}}}, "router_pool.nodes"),
    ({"expert_pools": [{"name": "cold", "groups": [2]}]}, "expert_pools[0].groups"),
    ({"expert_pools": [{"name": "cold", "groups": []}]}, "expert_pools.0.groups"),
    ({"expert_pools": [{"name": "a", "groups": [0]}, {"name": "b", "groups": [0]}]}, "expert_pools[1].groups"),
    ({"expert_pools": [{"name": "experts", "groups": [0]}]}, "expert_pools[0].name"),
    ({"expert_pools": [{"name": "Cold!", "groups": [0]}]}, "expert_pools.0.name"),
    ({"expert_pools": [{"name": "cold", "groups": [0], "spot": True}]}, "expert_pools.0.spot"),
    ({"expert_pools": [{"name": "gpu", "groups": [0], "device": "cuda"}]}, "expert_pools[0].num_gpus"),
    ({"expert_pools": [{"name": "cold", "groups": [0], "autoscaling": {"max_cost_per_hour": 9}}]},
     "expert_pools[0].autoscaling.max_cost_per_hour"),
    ({"expert_pool": {"autoscaling": {"max_cost_per_hour": 50}}, "prices": {"expert_replica_per_hour": 3},
      "expert_pools": [{"name": "cold", "groups": [1], "replica_per_hour": 0}]}, "['cold']havenoprice"),
    ({"expert_pool": {"autoscaling": {"max_cost_per_hour": 50}}, "prices": {"expert_replica_per_hour": 3},
      "expert_pools": [{"name": "hot", "groups": [0], "replica_per_hour": 30, "autoscaling": {"min_replicas": 2}}]},
     "max_cost_per_hour(50.0)isbelow"),
])
def test_bad_app_config_names_the_field(change, field):
    with pytest.raises(ValidationError) as err:
        AppConfig.model_validate({"model": "m", **change})
    assert field in str(err.value).replace("\n", ".").replace(" ", "")


def test_placement_file_is_checked_against_the_model(checkpoints, tmp_path):
    cfg = Checkpoint.open(checkpoints["qwen3_moe"]).config
    placement = load_placement(None, cfg, 2)
    assert placement.experts_of_group(0)[0] == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="must divide"):
        load_placement(None, cfg, 3)
    wrong = tmp_path / "p.json"
    round_robin(range(5), 8, 2).save(wrong)
    with pytest.raises(ConfigError, match="layers"):
        load_placement(str(wrong), cfg, 2)
    broken = tmp_path / "b.json"
    broken.write_text('{"version": 1, "groups": []}')
    with pytest.raises(ConfigError, match="placement file"):
        load_placement(str(broken), cfg, 2)


def test_replicated_experts_go_to_a_group_the_token_already_uses(checkpoints, tmp_path):
    import json

    cfg = Checkpoint.open(checkpoints["qwen3_moe"]).config
    doc = json.loads(load_placement(None, cfg, 2).to_json())
    for group in doc["groups"]:  # expert 0 of every layer in both groups
        for layer, experts in group["experts"].items():
            group["experts"][layer] = sorted(set(experts) | {0})
    path = tmp_path / "replicated.json"
    path.write_text(json.dumps(doc))
    choose = GroupChooser(load_placement(str(path), cfg, 2))
    assert choose.replicated
    groups = choose(0, torch.tensor([[0, 5, 6], [0, 1, 2]]))
    assert groups.tolist() == [[1, 1, 1], [0, 0, 0]]  # expert 0 follows the token's other experts


def test_dropped_experts_send_no_message(checkpoints):
    from switchyard.cluster.dispatch.remote_experts import RemoteExperts
    from switchyard.experts.messages import ExpertResponse
    from switchyard.router.dense_model import Routing

    class Recorder:
        def __init__(self):
            self.sent = []

        def send(self, requests):
            self.sent += [(group, request.expert_ids.tolist()) for group, request in requests.items()]
            return requests

        def receive(self, requests):
            return {g: ExpertResponse(r.layer, torch.zeros_like(r.hidden)) for g, r in requests.items()}

    cfg = Checkpoint.open(checkpoints["qwen3_moe"]).config
    transport = Recorder()
    experts = RemoteExperts(GroupChooser(load_placement(None, cfg, 2)), transport, 2)
    routing = Routing(torch.tensor([[1, 2, -1], [0, -1, -1]]), torch.tensor([[0.5, 0.3, 0.0], [1.0, 0.0, 0.0]]))
    experts.wait(experts.submit(0, torch.randn(2, 64), routing))
    assert transport.sent == [(0, [[1, 2, -1], [0, -1, -1]])]  # group 1 (experts 4-7) gets nothing


def test_adaptive_routing_reaches_the_router_engine():
    config = AppConfig.model_validate({"model": "m", "router": {"adaptive_routing": {"mode": "threshold", "value": 0.066}}})
    adaptive = config.engine_config().adaptive_routing
    assert (adaptive.mode, adaptive.value, adaptive.min_experts) == ("threshold", 0.066, 1)


@pytest.mark.parametrize("extra,named", [
    ({"expert_pool": {"num_replicas": 3}}, "expert_pool"),
    ({"placement": "p.json"}, "placement"),
    ({"expert_device": "cuda"}, "expert_device"),
])
def test_one_process_mode_refuses_settings_it_would_ignore(extra, named):
    with pytest.raises(ValidationError, match=named):
        AppConfig.model_validate({"model": "m", "num_groups": 0, **extra})
    assert AppConfig.model_validate({"model": "m", "num_groups": 0}).experts_in_router


def test_switchyard_serve_defaults_to_one_process_and_direct_ingress():
    from switchyard.cluster.cli import build_parser
    from switchyard.cluster.cli.serve import app_args, direct_ingress_env

    args = build_parser().parse_args(["serve"])
    assert AppConfig.model_validate(app_args(args)).num_groups == 0 and args.ingress == "direct"
    assert AppConfig.model_validate(app_args(build_parser().parse_args(["serve", "--groups", "2"]))).num_groups == 2
    env = direct_ingress_env(8123)  # the router replica alone binds the user's port
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "8123" and env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] == "8124"


def test_serve_shutdown_is_bounded_when_serve_hangs():
    import threading
    import time
    import types

    from switchyard.cluster.cli.serve import stop_serve

    release = threading.Event()
    hanging = types.SimpleNamespace(shutdown=lambda: release.wait(30))
    start = time.monotonic()
    assert stop_serve(hanging, timeout_s=0.5) is False
    assert time.monotonic() - start < 5
    release.set()
    assert stop_serve(types.SimpleNamespace(shutdown=lambda: None), timeout_s=5) is True


def test_otlp_traces_endpoint_flag_sets_the_app_config():
    from switchyard.cluster.cli import build_parser
    from switchyard.cluster.cli.serve import app_args

    args = build_parser().parse_args(["serve", "--otlp-traces-endpoint", "http://collector:4318"])
    assert AppConfig.model_validate(app_args(args)).telemetry.otlp_traces_endpoint == "http://collector:4318"
    assert AppConfig.model_validate(app_args(build_parser().parse_args(["serve"]))).telemetry.otlp_traces_endpoint is None
    with pytest.raises(ValidationError, match="otlp_traces_endpoint"):
        AppConfig.model_validate({"model": "m", "telemetry": {"otlp_traces_endpoint": "collector:4318"}})


def test_devices_reach_the_engine_and_gpus_must_be_reserved():
    gpu = {"model": "m", "device": "cuda", "router_pool": {"num_gpus": 1}, "expert_pool": {"num_gpus": 0.5}}
    config = AppConfig.model_validate(gpu)
    engine = config.engine_config()
    assert (engine.device, engine.torch_dtype, config.group_device) == ("cuda", torch.bfloat16, "cuda")
    assert AppConfig.model_validate({"model": "m"}).engine_config().torch_dtype == torch.float32
    # the router on a GPU, the groups on CPUs
    split = AppConfig.model_validate({**gpu, "expert_device": "cpu", "expert_pool": {"num_gpus": 0}})
    assert (split.device, split.group_device) == ("cuda", "cpu")
    with pytest.raises(ValidationError, match="router_pool.num_gpus is 0 but its replicas run on 'cuda'"):
        AppConfig.model_validate({"model": "m", "device": "cuda", "expert_pool": {"num_gpus": 1}})
    with pytest.raises(ValidationError, match="expert_pool.num_gpus is 0"):
        AppConfig.model_validate({**gpu, "expert_pool": {"num_gpus": 0}})
    with pytest.raises(ValidationError, match="expert_pool.num_gpus is 1.0 but its replicas run on 'cpu'"):
        AppConfig.model_validate({"model": "m", "expert_pool": {"num_gpus": 1}})


def test_kv_cache_settings_reach_the_engine_or_are_refused():
    config = AppConfig.model_validate({"model": "m", "router": {"kv_cache_memory": "2GiB", "block_size": 32}})
    engine = config.engine_config()
    assert (engine.kv_cache_memory, engine.block_size) == (2 << 30, 32)
    gpu = {"model": "m", "device": "cuda", "router_pool": {"num_gpus": 1}, "expert_pool": {"num_gpus": 1}}
    assert AppConfig.model_validate({**gpu, "router": {"gpu_memory_utilization": 0.8}}).engine_config() \
        .gpu_memory_utilization == 0.8
    with pytest.raises(ValidationError, match="router.gpu_memory_utilization.*needs device 'cuda'"):
        AppConfig.model_validate({"model": "m", "router": {"gpu_memory_utilization": 0.8}})
    with pytest.raises(ValidationError, match="kv_cache_memory"):
        AppConfig.model_validate({"model": "m", "router": {"kv_cache_memory": "lots"}})
    with pytest.raises(ValidationError, match="not both"):
        AppConfig.model_validate({**gpu, "router": {"gpu_memory_utilization": 0.8, "kv_cache_memory": 1 << 30}})


def test_serve_flags_set_devices_and_the_kv_cache():
    from switchyard.cluster.cli import build_parser
    from switchyard.cluster.cli.serve import app_args

    args = build_parser().parse_args(["serve", "--groups", "2", "--device", "cuda", "--expert-device", "cpu",
                                      "--kv-cache-memory", "512MiB", "--block-size", "8", "--dtype", "float16"])
    raw = app_args(args)
    raw["router_pool"] = {"num_gpus": 1}
    config = AppConfig.model_validate(raw)
    assert (config.device, config.group_device, config.dtype) == ("cuda", "cpu", "float16")
    assert (config.router.kv_cache_memory, config.router.block_size) == (512 << 20, 8)


def test_node_placement_reaches_each_groups_deployment_options():
    """`{group}` is each expert group's index in its Serve options; Serve itself takes them (`.options` checks
    ray_actor_options' keys)."""
    from switchyard.cluster.deployments.expert_group import ExpertGroupDeployment

    config = AppConfig.model_validate({"model": "m", "num_groups": 3, "expert_pool": {"nodes": {
        "label_selector": {"switchyard.io/expert-group": "{group}", "zone": "!us-east-1a"},
        "resources": {"experts-{group}": 1}, "max_replicas_per_node": 1}}})
    for group in range(3):
        options = config.expert_pool.deployment_options(group)
        assert options["ray_actor_options"]["label_selector"] == {"switchyard.io/expert-group": str(group),
                                                                  "zone": "!us-east-1a"}
        assert options["ray_actor_options"]["resources"] == {f"experts-{group}": 1}
        deployment = ExpertGroupDeployment.options(name=f"g{group}", **options)
        assert deployment.ray_actor_options["label_selector"]["switchyard.io/expert-group"] == str(group)
        assert deployment._replica_config.max_replicas_per_node == 1
    assert "label_selector" not in config.router_pool.deployment_options()["ray_actor_options"]


def test_each_group_runs_with_its_pools_settings(checkpoints):
    """Groups named in `expert_pools` get that pool's resources, nodes, device, autoscaling bounds and price;
    the others `expert_pool`'s. Read back from the Serve deployments build_app binds (no Ray needed)."""
    from switchyard.cluster.app import bind_expert_groups
    from switchyard.experts.checkpoint import Checkpoint

    config = AppConfig.model_validate({
        "model": str(checkpoints["qwen3_moe"]), "num_groups": 4,
        "prices": {"expert_replica_per_hour": 4.0},
        "expert_pool": {"num_cpus": 0.5, "nodes": {"label_selector": {"switchyard.io/node-type": "hot"}},
                        "autoscaling": {"min_replicas": 1, "max_replicas": 4, "max_cost_per_hour": 20}},
        "expert_pools": [{"name": "cold", "groups": [2, 3], "num_cpus": 0.25, "replica_per_hour": 1.0,
                          "nodes": {"resources": {"cheap-node": 1}},
                          "autoscaling": {"min_replicas": 1, "max_replicas": 8}}]})
    assert config.groups_of_pool() == {"experts": [0, 1], "cold": [2, 3]}
    bound = bind_expert_groups(config, Checkpoint.open(config.model))
    deployments = [app._bound_deployment for app in bound]
    for group in (0, 1):
        options = deployments[group].ray_actor_options
        assert options["num_cpus"] == 0.5 and options["label_selector"] == {"switchyard.io/node-type": "hot"}
        assert deployments[group]._deployment_config.autoscaling_config.max_replicas == 4
    cold = deployments[3]
    assert cold.ray_actor_options["num_cpus"] == 0.25 and cold.ray_actor_options["resources"] == {"cheap-node": 1}
    assert "label_selector" not in cold.ray_actor_options  # the pool's nodes block replaced the whole block
    autoscaling = cold._deployment_config.autoscaling_config
    assert autoscaling.max_replicas == 8
    policy = autoscaling.policy.policy_kwargs
    assert policy["group_prices"] == [4.0, 4.0, 1.0, 1.0] and policy["group_min_replicas"] == [1, 1, 1, 1]
    assert policy["budget_dollars_per_hour"] == 20.0  # no router price: the whole bound is the groups'
