"""The expert groups' autoscaling policy on constructed contexts (no Ray cluster), and the replicas' load meter."""

import pytest
from ray.serve._private.common import DeploymentID
from ray.serve.autoscaling_policy import _apply_autoscaling_config
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from switchyard.cluster.autoscaling.policy import (CostBudget, ExpertGroupPolicy, GroupLoad, PolicySettings, decide,
                                                   replicas_needed)
from switchyard.cluster.autoscaling.load_meter import LoadMeter

SETTINGS = PolicySettings(target_utilization=0.5, hysteresis=0.2, min_replicas=1, max_replicas=4)


def context(busy: list[float], rows: list[float] | None = None, target: int | None = None, extra=None,
            state=None, now=1000.0, **config) -> AutoscalingContext:
    replicas = [f"r{i}" for i in range(len(busy))]
    rows = rows or [100.0 * b for b in busy]
    metrics = {"busy": dict(zip(replicas, busy)), "rows_per_s": dict(zip(replicas, rows)),
               "in_flight": {r: 0.0 for r in replicas}, **(extra or {})}
    cfg = AutoscalingConfig(**{"min_replicas": 1, "max_replicas": 4, "upscale_delay_s": 0, "downscale_delay_s": 0,
                               **config})
    return AutoscalingContext(
        deployment_id=DeploymentID(name="g0", app_name="app"), deployment_name="g0", app_name="app",
        current_num_replicas=len(busy), target_num_replicas=target or len(busy), running_replicas=replicas,
        total_num_requests=0.0, total_queued_requests=0.0, aggregated_metrics=metrics, raw_metrics={},
        capacity_adjusted_min_replicas=cfg.min_replicas, capacity_adjusted_max_replicas=cfg.max_replicas,
        policy_state=state or {}, last_scale_up_time=None, last_scale_down_time=None, current_time=now, config=cfg)


def policy(**kwargs) -> ExpertGroupPolicy:
    return ExpertGroupPolicy(**{"group": 0, "num_groups": 2, "target_utilization": 0.5, "hysteresis": 0.2,
                                "min_replicas": 1, "max_replicas": 4, **kwargs})


def test_busy_replicas_scale_up_to_what_the_work_needs():
    assert policy()(context([0.9]))[0] == 2  # 0.9 replicas of work at 50% target: 1.8 -> 2
    assert policy()(context([0.95, 0.95]))[0] == 4
    assert policy()(context([1.0, 1.0, 1.0]))[0] == 4  # bounded by max_replicas


def test_idle_group_scales_down_to_its_minimum_and_never_below():
    assert policy()(context([0.0, 0.0, 0.0]))[0] == 1
    assert policy(min_replicas=2)(context([0.0, 0.0, 0.0]))[0] == 2


def test_hysteresis_holds_at_the_n_minus_1_edge():
    # 3 replicas with 0.95 replicas' work in all: 1.9 needed. Two would run at 47.5% (just under the 50%
    # target, inside the 20% margin): stay at 3 rather than drop to 2 and come straight back.
    needed = replicas_needed(GroupLoad(busy=0.95, rows_per_s=95), SETTINGS)
    assert needed == pytest.approx(1.9)
    assert decide(3, needed, SETTINGS) == 3
    assert decide(2, needed, SETTINGS) == 2  # and at 2 it does not ask for 3 either
    # clearly below the edge it does go down: 0.75 replicas' work -> 1.5 needed, 2 replicas at 37.5%
    assert decide(3, 1.5, SETTINGS) == 2
    # the band never flaps: from any count, a steady load gives a fixed point reached in one step
    for work in [x / 20 for x in range(0, 41)]:
        needed = work / SETTINGS.target_utilization
        for start in range(1, 5):
            once = decide(start, needed, SETTINGS)
            assert decide(once, needed, SETTINGS) == once, (work, start)


def test_capacity_and_router_floor_raise_the_need_never_lower_it():
    settings = PolicySettings(target_utilization=0.5, capacity_rows_per_s=1000.0, max_replicas=8)
    assert replicas_needed(GroupLoad(busy=0.2, rows_per_s=200.0), settings) == pytest.approx(0.4)
    # rows/s above what busy says (e.g. a faster replica): capacity counts
    assert replicas_needed(GroupLoad(busy=0.2, rows_per_s=600.0), settings) == pytest.approx(1.2)
    # the router expects more than is computed now (work queued): the floor counts
    assert replicas_needed(GroupLoad(busy=0.2, rows_per_s=200.0, floor_rows_per_s=1500.0), settings) == \
        pytest.approx(3.0)
    # a low floor changes nothing
    assert replicas_needed(GroupLoad(busy=0.8, rows_per_s=800.0, floor_rows_per_s=10.0), settings) == \
        pytest.approx(1.6)
    # without a configured capacity it is measured live (rows per busy second)
    live = PolicySettings(target_utilization=0.5)
    assert replicas_needed(GroupLoad(busy=0.5, rows_per_s=500.0, floor_rows_per_s=1500.0), live) == \
        pytest.approx(3.0)
    p = policy()
    ctx = context([0.4], rows=[400.0], extra={"floor_rows_per_s": {"r0": 2000.0}})
    assert p(ctx)[0] == 4


def test_cost_budget_shares_dollars_between_groups():
    budget = CostBudget(dollars_per_hour=9.0, prices=[2.0, 2.0], min_replicas=[1, 1])
    assert [budget.fair_share(g) for g in (0, 1)] == [4.5, 4.5]  # $2 each for the minimum, $5 spare split
    assert budget.cap(0, [1, 1]) == 3  # group 1 uses $2 of its $4.5: group 0 may borrow the $2.5
    assert budget.cap(1, [3, 1]) == 2  # group 0 borrowed: group 1 still has its own share
    assert budget.cap(0, [3, 2]) == 2  # ... and group 0 gives the borrowed replica back
    hot = policy(budget_dollars_per_hour=8.0, group_prices=[2.0, 2.0])
    two_groups = {"replicas_g0": {"r0": 2.0}, "replicas_g1": {"r0": 1.0}}
    assert hot(context([1.0, 1.0], extra=two_groups))[0] == 3  # wants 4; its share $4 + group 1's unused $2
    busy_peer = {"replicas_g0": {"r0": 3.0}, "replicas_g1": {"r0": 2.0}}
    assert hot(context([1.0, 1.0, 1.0], extra=busy_peer))[0] == 2


def test_a_group_on_cheaper_hardware_buys_more_replicas_with_its_share():
    # group 0 on a $4/h node type, group 1 on a $1/h one; $12/h in all, one replica each at least
    budget = CostBudget(dollars_per_hour=12.0, prices=[4.0, 1.0], min_replicas=[1, 1])
    assert [budget.fair_share(g) for g in (0, 1)] == [7.5, 4.5]
    assert budget.cap(1, [1, 1]) == 8  # its $4.5 and the $3.5 group 0 leaves: 8 cheap replicas
    assert budget.cap(0, [1, 8]) == 1  # group 1 borrowed: group 0's own $7.5 buys 1 replica at $4
    assert budget.cap(0, [1, 1]) == 2  # with group 1's unused $3.5: $11, 2 replicas at $4
    assert 2 * 4.0 + budget.cap(1, [2, 1]) * 1.0 <= 12.0  # whatever group 0 took, the two stay within the bound


def test_serve_wraps_the_policy_in_its_delays():
    from ray.serve._private.constants import SERVE_AUTOSCALING_DECISION_TIMESTAMP_KEY as SINCE

    wrapped = _apply_autoscaling_config(policy())
    target, state = wrapped(context([1.0], upscale_delay_s=5.0))
    assert target == 1 and state[SINCE] is not None  # the first tick that wants more starts the upscale delay
    state[SINCE] -= 10  # ... which has now passed
    assert wrapped(context([1.0], upscale_delay_s=5.0, state=state))[0] == 2


def test_load_meter_counts_rows_busy_share_and_calls_in_flight():
    now = [0.0]
    meter = LoadMeter(clock=lambda: now[0])
    with meter.call(32):
        now[0] = 0.25
        assert meter.in_flight == 1
        with meter.call(8):  # overlapping calls: their union is busy time, not the sum
            now[0] = 0.5
    now[0] = 1.0
    sample = meter.sample()
    assert sample == {"rows_per_s": 40.0, "busy": 0.5, "in_flight": 0.0}
    assert meter.idle_for() == pytest.approx(0.5)
    now[0] = 2.0
    assert meter.sample() == {"rows_per_s": 0.0, "busy": 0.0, "in_flight": 0.0}


def test_the_router_floor_grows_with_sequences_queued_behind_the_running_ones():
    from switchyard.cluster.autoscaling.demand import GroupDemand, expected_rows_per_s

    assert expected_rows_per_s([100.0, 10.0], running=16, waiting=16) == [200.0, 20.0]
    assert expected_rows_per_s([100.0, 10.0], running=16, waiting=0) == [100.0, 10.0]
    assert expected_rows_per_s([0.0, 0.0], running=0, waiting=5) == [0.0, 0.0]
    now = [0.0]
    totals = [0, 0]  # the dispatcher's running rows per group
    demand = GroupDemand(lambda: totals, clock=lambda: now[0])
    totals[0] += 30
    totals[1] += 5
    totals[0] += 10
    now[0] = 2.0
    assert demand.take() == [20.0, 2.5]
    now[0] = 3.0
    assert demand.take() == [0.0, 0.0]
