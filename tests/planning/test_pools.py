"""Hot and cold pools: a skewed load puts its cold groups on cheaper hardware, a uniform load none; the step a
cold group must keep binds; the split is a valid app config; `switchyard plan --json` carries it."""

import json
from dataclasses import replace

import numpy as np
import pytest

from switchyard.cluster.cli import main
from switchyard.cluster.planning.hardware import BUILTIN_PROFILES
from switchyard.cluster.planning.model_shape import load_shape, reference_model
from switchyard.cluster.planning.performance import Deployment, decode_step
from switchyard.cluster.planning.pools import GroupSide, pool_step_s, recommend_pools
from switchyard.cluster.planning.routing import RoutingSource, skew_routing, skew_shares
from switchyard.configs.serve import AppConfig

H100, A100, L40S = (BUILTIN_PROFILES[n] for n in ("H100", "A100", "L40S"))


@pytest.fixture(scope="module")
def deepseek():
    return load_shape(reference_model("deepseek-v3"))


def plan(m, skew: float, coalesce: bool = False) -> Deployment:
    """8 groups of 32 experts, 4 two-GPU replicas each, 65 routers: calls served one at a time (as built)."""
    r = skew_routing(m.num_experts, m.top_k, 8, skew)
    return Deployment("groups", 65, 64, 2048, "rdma", num_groups=8, group_replicas=1 if coalesce else 4,
                      gpus_per_group_replica=2, micro_batches=2, fan_out=r.fan_out, imbalance=r.imbalance,
                      coalesce_calls=coalesce)


def sides(d: Deployment, cold, cold_side: GroupSide) -> list[GroupSide]:
    hot = GroupSide(H100, d.gpus_per_group_replica, d.group_replicas)
    return [cold_side if g in cold else hot for g in range(d.num_groups)]


def test_skewed_load_gets_a_cold_pool_and_uniform_load_none(deepseek):
    skewed = plan(deepseek, 1.2)
    shares = skew_shares(deepseek.num_experts, 8, 1.2)
    out = recommend_pools(deepseek, H100, skewed, shares, [L40S])
    assert out["recommended"], out["summary"]
    hot, cold = out["pools"]
    assert (hot["hardware"], cold["hardware"]) == ("H100", "L40S")
    assert sorted(hot["groups"] + cold["groups"]) == list(range(8))
    assert max(shares[cold["groups"]]) <= min(shares[hot["groups"]])  # the least loaded groups go cold
    assert 0 < out["saving"] < 1 and out["dollars_per_hour"] < out["baseline"]["dollars_per_hour"]
    assert out["dollars_per_million"] < out["baseline"]["dollars_per_million"]
    assert out["step_s"] <= out["baseline"]["step_s"] + 1e-12
    # the baseline is the plan itself: the same step as the search's model at the same imbalance
    assert out["baseline"]["step_s"] == pytest.approx(decode_step(deepseek, H100, skewed).step_s)
    assert out["baseline"]["dollars_per_hour"] == pytest.approx(skewed.devices * H100.price_per_hour)

    uniform = plan(deepseek, 0.0)
    none = recommend_pools(deepseek, H100, uniform, skew_shares(deepseek.num_experts, 8, 0.0), [H100, A100, L40S])
    assert not none["recommended"] and none["summary"].startswith("no saving: ")
    assert none["pools"] == [] and none["app_config"] is None
    assert {row["hardware"] for row in none["by_hardware"]} == {"H100", "A100", "L40S"}


def test_the_step_of_the_hot_groups_binds_the_cold_pool(deepseek):
    d = plan(deepseek, 1.2)
    shares = skew_shares(deepseek.num_experts, 8, 1.2)[None, :]
    out = recommend_pools(deepseek, H100, d, shares, [L40S])
    cold = out["pools"][1]
    side = GroupSide(L40S, cold["gpus_per_replica"], cold["replicas"])
    base = out["baseline"]["step_s"]
    assert pool_step_s(deepseek, H100, d, shares, sides(d, cold["groups"], side)) == pytest.approx(out["step_s"])
    # one replica or one GPU less a cold replica would be cheaper, and would make a cold group a layer's slowest
    for cheaper in (replace(side, replicas=side.replicas - 1), replace(side, gpus=side.gpus - 1)):
        if cheaper.replicas >= 1 and cheaper.gpus >= 1:
            assert pool_step_s(deepseek, H100, d, shares, sides(d, cold["groups"], cheaper)) > base
    # a cold group's pass on the L40S is slower per pair than on the H100: its share is what lets it keep up
    hottest = int(np.argmax(shares[0]))
    assert pool_step_s(deepseek, H100, d, shares, sides(d, {hottest}, side)) > base


def test_merged_passes_read_every_expert_so_a_cold_group_saves_nothing(deepseek):
    # a replica that merges every router's call reads all its experts a layer, whatever its share of the load
    d = plan(deepseek, 1.2, coalesce=True)
    out = recommend_pools(deepseek, H100, d, skew_shares(deepseek.num_experts, 8, 1.2), [A100, L40S])
    assert not out["recommended"]


def test_a_group_hot_in_one_layer_is_hot(deepseek):
    # mean loads alike, but group 0 takes half of layer 0: on the L40S it would be that layer's slowest
    d = plan(deepseek, 0.0)
    shares = np.array([[0.5] + [0.5 / 7] * 7, [0.5 / 7] * 7 + [0.5]])
    per_layer = recommend_pools(deepseek, H100, d, shares, [L40S])
    flat = recommend_pools(deepseek, H100, d, shares.mean(axis=0), [L40S])
    assert per_layer["baseline"]["step_s"] > flat["baseline"]["step_s"]


def test_the_split_is_a_valid_app_config(deepseek):
    out = recommend_pools(deepseek, H100, plan(deepseek, 1.2), skew_shares(deepseek.num_experts, 8, 1.2), [L40S])
    config = AppConfig.model_validate({"model": "deepseek-ai/DeepSeek-V3", **out["app_config"]})
    hot, cold = out["pools"]
    assert config.num_groups == 8 and config.router_pool.num_replicas == 65
    for pool in (hot, cold):
        for g in pool["groups"]:
            resolved = config.pool_of_group(g)
            assert resolved.name == pool["name"] and resolved.device == "cuda"
            assert resolved.pool.num_replicas == pool["replicas"] and resolved.pool.num_gpus == pool["gpus_per_replica"]
            assert resolved.replica_per_hour == pytest.approx(pool["price_per_replica_hour"])
            assert resolved.pool.nodes.label_selector == {"switchyard.io/node-type": pool["hardware"].lower()}


def test_routing_source_shares_follow_the_skew():
    source = RoutingSource(256, 8, skew=1.2)
    shares, origin = source.shares(8, "affinity")
    assert shares.shape == (1, 8) and shares.sum() == pytest.approx(1.0)
    assert shares.max() * 8 == pytest.approx(source.routing(8, "affinity").imbalance)
    assert "skew 1.2" in origin


def test_plan_json_has_pools_per_groups_plan(capsys):
    assert main(["plan", "--tokens-per-s", "20000", "--transport", "rdma", "--top", "1", "--skew", "1.2",
                 "--pool-hardware", "L40S=0.9", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for layout, plans in report["plans"].items():
        for p in plans:
            assert ("pools" in p) == (p["layout"] == "groups"), layout
            if "pools" in p and p["deployment"]["num_groups"] > 1:
                assert {r["hardware"] for r in p["pools"]["by_hardware"]} == {"H100", "L40S"}
            if "pools" in p:
                assert p["pools"]["summary"]
