"""The simulator reads a replica's load averaged over time, and `--saving-bounds` takes each brake off in turn."""

from dataclasses import replace

import pytest

from switchyard.cluster.planning.day_cycle import DAY_SETTINGS, compare_day
from switchyard.cluster.planning.hardware import BUILTIN_PROFILES
from switchyard.cluster.planning.model_shape import load_shape, reference_model
from switchyard.cluster.planning.performance import Deployment
from switchyard.cluster.planning.search import make_plan
from switchyard.cluster.planning.simulator import simulate
from switchyard.cluster.planning.workloads import Workload

H100 = BUILTIN_PROFILES["H100"]


@pytest.fixture(scope="module")
def deepseek():
    return load_shape(reference_model("deepseek-v3"))


def small_plan(m, group_replicas: int = 1):
    d = Deployment("groups", 8, 64, 2048, "rdma", num_groups=8, group_replicas=group_replicas,
                   gpus_per_group_replica=2, micro_batches=2, fan_out=5.3, imbalance=1.0, coalesce_calls=True)
    return make_plan(m, H100, d, 1, "affinity", "test", 1024)


def test_requests_shorter_than_a_tick_still_count_as_load(deepseek):
    # 16-token outputs finish within a 10 s tick: read at the tick's end no sequence would be held, the routers
    # would look idle and shrink to one under steady load
    plan = small_plan(deepseek)
    steady = Workload("steady", 0.5 * plan.tokens_per_s / 16, 1800.0, 1024, 16)
    result = simulate(deepseek, H100, plan.deployment, steady, replace(DAY_SETTINGS, downscale_delay_s=60.0))
    late = [routers for t, routers, _, _ in result.timeline if t > 900]
    assert min(late) >= 4  # half the peak's 8 routers' load at a target utilisation of 0.6


def test_saving_bounds_take_each_brake_off(deepseek):
    plan = small_plan(deepseek)
    day = compare_day(deepseek, H100, plan, "day", hours=2.0, trough=0.1, bounds=True)
    bounds = day["bounds"]
    rows = {r["what"]: r for r in bounds["rows"]}
    assert rows["no delays and no hysteresis"]["saving"] >= rows["as simulated"]["saving"] - 1e-9
    assert rows["no hysteresis"]["saving"] >= rows["as simulated"]["saving"] - 1e-9
    # one replica a group at peak: the groups cannot scale, their GPU-hours are the same in every run
    assert bounds["unscalable"]["pools"] == ["8 groups at 1 replica x 2 GPU"]
    assert bounds["unscalable"]["device_hours"] == pytest.approx(8 * 2 * 2.0)
    ideal = list(bounds["perfect_scaler"].values())
    assert ideal[0] >= ideal[1]  # at utilisation 1 a perfect scaler keeps fewer replicas than at the target
    assert all(v["replica_saving"] >= v["saving"] - 1e-9 for v in day["variants"])  # the groups' 2 GPUs a replica


def test_plan_prints_the_day_and_its_bounds(capsys):
    from switchyard.cluster.cli import main

    assert main(["plan", "--tokens-per-s", "20000", "--transport", "rdma", "--top", "1", "--simulate", "day",
                 "--simulate-coalesced", "--sim-hours", "1", "--saving-bounds"]) == 0
    out = capsys.readouterr().out
    assert "replica-hours" in out and "routers 1-" in out
    assert "what bounds the saving" in out and "a perfect scaler" in out
