"""The search returns plans that meet the target; the simulator, driven by the real policy, scales up under a
burst and back down after; routing from a stated skew; the Pareto front."""

import pytest

from switchyard.cluster.planning.hardware import BUILTIN_PROFILES
from switchyard.cluster.planning.model_shape import load_shape, reference_model
from switchyard.cluster.planning.pareto import pareto_front
from switchyard.cluster.planning.performance import Deployment, decode_step
from switchyard.cluster.planning.routing import skew_routing
from switchyard.cluster.planning.search import Target, cheapest, expert_parallel_plans, group_plans
from switchyard.cluster.planning.simulator import ScalingSettings, simulate
from switchyard.cluster.planning.workloads import Workload


@pytest.fixture(scope="module")
def deepseek():
    return load_shape(reference_model("deepseek-v3"))


def uniform(shape):
    return lambda groups, placement: skew_routing(shape.num_experts, shape.top_k, groups, 0.0)


def test_search_plans_meet_the_target(deepseek):
    hw = BUILTIN_PROFILES["H100"]
    target = Target(50_000, 0.05, 5.0, 2048, 2000)
    plans = group_plans(deepseek, hw, target, uniform(deepseek), (8, 16), (64, 128), (1, 2), ("rdma",), (1, 2),
                        coalesce=True)
    assert plans
    for p in plans:
        assert p.meets(target)
        assert p.devices == p.deployment.devices
        assert p.dollars_per_hour == pytest.approx(p.devices * hw.price_per_hour)
    best = cheapest(plans, 1)[0]
    assert all(best.dollars_per_hour <= p.dollars_per_hour for p in plans)
    ep = expert_parallel_plans(deepseek, hw, target, uniform(deepseek), (32, 64), (64, 128), (2,))
    assert ep and all(p.meets(target) for p in ep)


def test_ray_transport_cannot_meet_50ms_on_deepseek(deepseek):
    # 58 MoE layers x a 1 ms round trip is 58 ms a token before any compute
    hw = BUILTIN_PROFILES["H100"]
    target = Target(10_000, 0.05, 5.0)
    assert not group_plans(deepseek, hw, target, uniform(deepseek), (8,), (64,), (1, 2, 4), ("ray-compiled",), (1,),
                           coalesce=True)
    relaxed = Target(10_000, 0.2, 5.0)
    assert group_plans(deepseek, hw, relaxed, uniform(deepseek), (8,), (64,), (1,), ("ray-compiled",), (1,),
                       coalesce=True)


def test_skew_routing():
    flat = skew_routing(64, 8, 8, 0.0)
    assert flat.imbalance == pytest.approx(1.0)
    assert flat.fan_out == pytest.approx(8 * (1 - (7 / 8) ** 8))
    skewed = skew_routing(64, 8, 8, 1.2)
    assert skewed.imbalance > 1.0
    with pytest.raises(ValueError):
        skew_routing(64, 8, 8, -1.0)


def test_pareto_front():
    points = [(100, 10), (90, 12), (200, 20), (150, 25), (50, 5)]
    assert sorted(pareto_front(points)) == [0, 2, 4]


def test_simulator_scales_up_under_a_burst_and_down_after(deepseek):
    hw = BUILTIN_PROFILES["H100"]
    peak = Deployment("groups", 8, 64, 1024, "rdma", num_groups=8, group_replicas=4, gpus_per_group_replica=2,
                      micro_batches=2, fan_out=3.5, imbalance=1.1)
    capacity = decode_step(deepseek, hw, peak).tokens_per_s
    burst = Workload("bursty", 0.8 * capacity / 128, 900, 512, 128, burst_start_s=200, burst_s=300,
                     base_fraction=0.05)
    settings = ScalingSettings(autoscale=True, tick_s=1.0, policy_period_s=1.0, upscale_delay_s=5.0,
                               downscale_delay_s=30.0, replica_start_s=20.0)
    result = simulate(deepseek, hw, peak, burst, settings)
    routers = {t: r for t, r, _, _ in result.timeline}
    groups = {t: sum(g) for t, _, g, _ in result.timeline}
    before, during, after = routers[150.0], max(routers[t] for t in range(300, 500)), routers[899.0]
    assert before < during and after < during
    assert max(groups[t] for t in range(300, 500)) > groups[150.0]
    fixed = simulate(deepseek, hw, peak, burst, ScalingSettings(**{**settings.__dict__, "autoscale": False}))
    assert result.device_hours < fixed.device_hours
    assert result.tokens == pytest.approx(fixed.tokens, rel=0.05)


def test_closed_workload_keeps_its_clients_busy_and_in_line_prefill_costs_their_tokens(deepseek):
    from dataclasses import replace

    from switchyard.cluster.planning.performance import prefill_s

    hw = BUILTIN_PROFILES["H100"]
    d = Deployment("groups", 1, 64, 1024, "rdma", num_groups=8)
    clients, prompt, output = 16, 512, 64
    work = Workload("closed", 1.0, 120.0, prompt, output, concurrency=clients)
    step = decode_step(deepseek, hw, replace(d, batch_per_router=clients)).step_s
    elsewhere = simulate(deepseek, hw, d, work, ScalingSettings(autoscale=False))
    # every client always has a request decoding: a token each per step, all the time
    assert elsewhere.tokens / work.duration_s == pytest.approx(clients / step, rel=0.02)
    assert elsewhere.finished_tokens <= elsewhere.tokens
    assert elsewhere.itl_p50_s == pytest.approx(step)
    # in line, each round of 16 requests also waits for their prefill on the router
    in_line = simulate(deepseek, hw, d, work, ScalingSettings(autoscale=False, prefill_on_router=True))
    round_s = output * step + prefill_s(deepseek, hw, d, prompt * clients)
    assert in_line.tokens / work.duration_s == pytest.approx(clients * output / round_s, rel=0.05)
    with pytest.raises(ValueError, match="concurrency"):
        Workload("closed", 1.0, 10.0)
    with pytest.raises(ValueError, match="concurrency"):
        Workload("steady", 1.0, 10.0, concurrency=4)
    # aiperf's ITL: a request's tokens also wait for the prefills that run in line while it decodes
    assert elsewhere.itl_mean_s == pytest.approx(step)
    assert in_line.itl_mean_s > step
