"""The performance model on hand-checkable cases: shapes, distinct experts, rooflines, the layer formula."""

import math

import pytest

from switchyard.cluster.planning.hardware import BUILTIN_PROFILES, HardwareProfile, Transport
from switchyard.cluster.planning.model_shape import load_shape, reference_model
from switchyard.cluster.planning.performance import (Deployment, attention_s, decode_step, distinct_experts,
                                                     experts_s, memory_fits)

# a device with round numbers: 1 TFLOP/s, 1 TB/s, no efficiency loss, no overheads
UNIT = HardwareProfile("unit", 1e12, 1e12, 1e12, 1e12, 8, 1.0,
                       {"t": Transport("t", 1e-3, 1e9)}, compute_efficiency=1.0, memory_efficiency=1.0,
                       network_efficiency=1.0, layer_overhead_s=0.0, step_overhead_s=0.0)


@pytest.fixture(scope="module")
def deepseek():
    return load_shape(reference_model("deepseek-v3"))


def test_reference_shapes_match_published_sizes(deepseek):
    assert (deepseek.num_moe_layers, deepseek.num_dense_layers, deepseek.num_experts, deepseek.top_k) == (58, 3, 256, 8)
    assert deepseek.weight_bytes == 1.0  # fp8 checkpoint
    assert deepseek.expert_params == 3 * 7168 * 2048
    assert deepseek.kv_elements_per_token == 512 + 64  # MLA caches the latent and the rope key
    assert deepseek.expert_bytes_all_layers == pytest.approx(654e9, rel=0.01)
    qwen = load_shape(reference_model("qwen3-235b-a22b"))
    assert (qwen.num_moe_layers, qwen.num_experts, qwen.top_k, qwen.kv_elements_per_token) == (94, 128, 8, 2 * 4 * 128)
    mixtral = load_shape(reference_model("mixtral-8x22b"))
    assert (mixtral.num_moe_layers, mixtral.num_experts, mixtral.top_k) == (56, 8, 2)
    assert mixtral.attention_params == 6144 * (48 + 16) * 128 + 48 * 128 * 6144


def test_distinct_experts():
    assert distinct_experts(1, 64) == pytest.approx(1.0)
    assert distinct_experts(0, 64) == 0.0
    assert distinct_experts(10_000, 64) == pytest.approx(64.0)
    assert distinct_experts(2, 2) == pytest.approx(1.5)  # 2 picks over 2 experts: both hit with probability 1/2
    assert distinct_experts(100, 0.5) == 0.5  # a share of one expert


def test_experts_roofline(deepseek):
    # one assignment reads one expert's 44M fp8 parameters (44 MB at 1 TB/s) and does 88 MFLOP at 1 TFLOP/s
    assert experts_s(deepseek, UNIT, 1, 256) == pytest.approx(2 * deepseek.expert_params / 1e12)
    assert experts_s(deepseek, UNIT, 10_000, 256) == pytest.approx(2 * 10_000 * deepseek.expert_params / 1e12)


def test_attention_reads_the_kv_cache(deepseek):
    short = attention_s(deepseek, UNIT, 64, 1, with_shared=False)
    long = attention_s(deepseek, UNIT, 64, 4096, with_shared=False)
    kv_bytes = 64 * 4096 * 576 * 2
    flops = 64 * 4096 * deepseek.attention_flops_per_position
    weights = deepseek.attention_params
    assert long == pytest.approx(max(2 * 64 * weights + flops, weights + kv_bytes) / 1e12)
    assert long > short


def test_groups_layer_is_attention_trip_experts_without_overlap(deepseek):
    d = Deployment("groups", 1, 16, 1, "t", num_groups=8, gpus_per_group_replica=2, fan_out=2.0)
    step = decode_step(deepseek, UNIT, d)
    att = attention_s(deepseek, UNIT, 16, 1)
    exp = experts_s(deepseek, UNIT, 16 * 8 / 8, 32, 2)
    trip = 1e-3 + 2 * 16 * 2.0 * 7168 * 2 / 1e9
    assert step.attention_s == pytest.approx(58 * att)
    assert step.dispatch_s == pytest.approx(58 * trip)
    assert step.step_s == pytest.approx(58 * (att + trip + exp) + step.dense_s)
    assert step.tokens_per_s == pytest.approx(16 / step.step_s)


def test_micro_batches_overlap_but_every_layer_still_waits_for_a_trip(deepseek):
    base = Deployment("groups", 1, 256, 2048, "t", num_groups=8, gpus_per_group_replica=2, fan_out=2.0)
    one = decode_step(deepseek, UNIT, base)
    two = decode_step(deepseek, UNIT, Deployment(**{**base.__dict__, "micro_batches": 2}))
    assert two.step_s < one.step_s
    assert two.step_s >= 58 * 1e-3


def test_group_replica_serving_many_routers_is_the_bottleneck(deepseek):
    few = Deployment("groups", 4, 64, 1024, "t", num_groups=8, group_replicas=4, gpus_per_group_replica=2)
    many = Deployment(**{**few.__dict__, "routers": 256})
    assert decode_step(deepseek, UNIT, many).step_s > decode_step(deepseek, UNIT, few).step_s
    # on a GPU, where one call is bound by reading the group's weights, merging the calls reads them once
    h100 = BUILTIN_PROFILES["H100"]
    on_gpus = Deployment(**{**many.__dict__, "transport": "rdma"})
    merged = Deployment(**{**on_gpus.__dict__, "coalesce_calls": True})
    assert decode_step(deepseek, h100, merged).step_s < decode_step(deepseek, h100, on_gpus).step_s


def test_memory_fits(deepseek):
    h100 = BUILTIN_PROFILES["H100"]
    assert not memory_fits(deepseek, h100, Deployment("groups", 1, 8, 1024, "rdma", num_groups=8))  # 82 GB a group
    assert memory_fits(deepseek, h100, Deployment("groups", 1, 8, 1024, "rdma", num_groups=8, gpus_per_group_replica=2))
    assert not memory_fits(deepseek, h100, Deployment("expert-parallel", 8, 8, 1024))  # 82 GB of experts a GPU


def test_bad_input_fails():
    with pytest.raises(ValueError):
        Deployment("groups", 0, 8, 10)
    with pytest.raises(ValueError):
        Deployment("groups", 1, 8, 10, imbalance=0.5)
    with pytest.raises(ValueError, match="no transport"):
        UNIT.transport("rdma")
    assert math.isfinite(decode_step(load_shape(reference_model("mixtral-8x22b")), UNIT,
                                     Deployment("single", 1, 4, 100)).step_s)


def test_profiles_round_trip_as_json(tmp_path):
    from switchyard.cluster.planning.hardware import resolve_profile
    from switchyard.cluster.planning.host import with_transports

    path = tmp_path / "h100.json"
    BUILTIN_PROFILES["H100"].save(path)
    assert resolve_profile(str(path)) == BUILTIN_PROFILES["H100"]
    assert resolve_profile("h200", price=9.0).price_per_hour == 9.0
    # a transport's latency is the measured round trip less the same experts run in process
    host = with_transports(UNIT, in_process_ms=1.5, round_trips_ms={"ray-compiled": 4.0})
    assert host.transport("ray-compiled").latency_s == pytest.approx(2.5e-3)


def test_host_overheads_are_fitted_from_several_batches_and_predict_one_left_out(deepseek):
    from dataclasses import replace

    from switchyard.cluster.planning.host import with_overhead

    def roofline(batch: int) -> float:
        return decode_step(deepseek, UNIT, Deployment("single", 1, batch, 64)).step_s

    # a host whose steps take, beyond the roofline, 0.1 ms a layer, 0.02 ms a distinct expert a MoE layer hits
    # and 0.5 ms a sequence
    per_layer, per_expert, per_sequence = 1e-4, 2e-5, 5e-4

    def host_step(batch: int) -> float:
        hit = distinct_experts(batch * deepseek.top_k, deepseek.num_experts)
        return roofline(batch) + per_layer * deepseek.num_layers + per_expert * deepseek.num_moe_layers * hit \
            + per_sequence * batch

    measured = with_overhead(UNIT, deepseek, {b: host_step(b) for b in (1, 4, 8, 64)})
    assert measured.layer_overhead_s == pytest.approx(per_layer)
    assert measured.expert_overhead_s == pytest.approx(per_expert)
    assert measured.sequence_overhead_s == pytest.approx(per_sequence)
    assert decode_step(deepseek, measured, Deployment("single", 1, 32, 64)).step_s == pytest.approx(host_step(32))
    # the per-sequence overhead is charged per sequence of a router's batch: 32 sequences, 32 x its cost
    groups = Deployment("groups", 1, 32, 64, "t", 8)
    grown = (decode_step(deepseek, measured, groups).step_s
             - decode_step(deepseek, replace(measured, sequence_overhead_s=0.0), groups).step_s)
    assert grown == pytest.approx(32 * per_sequence)
    # a host with no cost per expert: the fit does not make one up below zero to absorb noise
    noisy = {b: roofline(b) + per_layer * deepseek.num_layers + per_sequence * b * (1.02 if b == 4 else 1.0)
             for b in (1, 4, 8, 64)}
    fitted = with_overhead(UNIT, deepseek, noisy)
    assert min(fitted.layer_overhead_s, fitted.expert_overhead_s, fitted.sequence_overhead_s) >= 0.0
    assert fitted.sequence_overhead_s == pytest.approx(per_sequence, rel=0.05)
    with pytest.raises(ValueError, match="3 or more batch sizes"):
        with_overhead(UNIT, deepseek, {1: 0.1, 8: 0.2})
    # a step that other work slowed 3x fits no host model: refused, not turned into a profile
    slowed = {b: host_step(b) * (3.0 if b == 8 else 1.0) for b in (1, 4, 8, 16, 64)}
    with pytest.raises(ValueError, match="measure again on a quiet machine"):
        with_overhead(UNIT, deepseek, slowed)


def test_processes_sharing_a_hosts_cores_stretch_compute_not_the_measured_trip(deepseek):
    from dataclasses import replace

    from switchyard.cluster.planning.performance import core_sharing

    groups = Deployment("groups", 1, 32, 64, "t", 2)
    host = replace(UNIT, shared_cores=2)
    assert core_sharing(host, groups) == pytest.approx(1.5)  # a router and 2 group replicas on 2 cores
    assert core_sharing(host, Deployment("single", 1, 32, 64)) == 1.0  # one process: its threads are the profile's
    assert core_sharing(UNIT, groups) == 1.0  # GPUs: every process on its own device
    alone, shared = decode_step(deepseek, UNIT, groups), decode_step(deepseek, host, groups)
    assert shared.dispatch_s == pytest.approx(alone.dispatch_s)
    assert shared.attention_s == pytest.approx(1.5 * alone.attention_s)
    assert shared.step_s - shared.dispatch_s == pytest.approx(1.5 * (alone.step_s - alone.dispatch_s))
