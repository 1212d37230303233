"""Forecast-led against reactive scaling on a shift of traffic (cluster/planning/shift.py): the mechanism, not
the numbers. The forecast sees a request's load when it arrives, the measured load when its decode starts: as
it is now, it can lead only by the time requests wait; looked ahead along its trend, by the horizon, where the
shift takes longer than the horizon."""

from dataclasses import replace

import pytest

from switchyard.cluster.planning.hardware import BUILTIN_PROFILES
from switchyard.cluster.planning.model_shape import load_shape, reference_model
from switchyard.cluster.planning.performance import Deployment
from switchyard.cluster.planning.search import make_plan
from switchyard.cluster.planning.shift import SHIFT_SETTINGS, compare_shift, shift_table, shifted_mix

H100 = BUILTIN_PROFILES["H100"]


@pytest.fixture(scope="module")
def small():
    m = load_shape(reference_model("deepseek-v3"))
    d = Deployment("groups", 16, 64, 2048, "rdma", num_groups=4, group_replicas=8, gpus_per_group_replica=1,
                   micro_batches=1, fan_out=2.5, imbalance=1.0)
    return m, make_plan(m, H100, d, 1, "affinity", "test", 1024)


def run(small, case, warmup_s=600.0, **kw):
    m, plan = small
    # a short downscale delay so the pools settle after the start within a short warm-up
    settings = replace(SHIFT_SETTINGS, downscale_delay_s=120.0)
    report = compare_shift(m, H100, plan, case, settings, warmup_s=warmup_s, after_s=300.0, **kw)
    # forecast: the floor as it is now (horizon 0); ahead: looked ahead by the upscale delay plus the start (90
    # s); lead: by twice that
    names = {None: "reactive", 0.0: "forecast", 90.0: "ahead", 180.0: "lead"}
    return report, {names[r["horizon_s"]]: r for r in report["rows"]}


def test_the_mix_moves_the_hot_share_to_another_group():
    mix = shifted_mix(4, 100.0, hot=2.0, ramp_s=10.0)
    assert mix(0.0)[0] == pytest.approx(0.5) and mix(200.0)[1] == pytest.approx(0.5)
    assert mix(105.0)[1] == pytest.approx(0.5 * 0.5 + 0.5 * (0.5 / 3))
    assert all(abs(mix(t).sum() - 1.0) < 1e-12 for t in (0.0, 105.0, 200.0))


def test_without_a_queue_an_exact_forecast_only_ties(small):
    # a rate at which this small plan's routers never queue, even while the hot group slows the step
    report, rows = run(small, "step", error=0.0, rates=(0.15, 0.15, 0.0), horizons=(0.0,))
    assert rows["reactive"]["peak_queue"] == 0 and rows["forecast"]["peak_queue"] == 0
    assert rows["reactive"]["serving_after_s"] is not None
    assert abs(rows["forecast"]["serving_after_s"] - rows["reactive"]["serving_after_s"]) <= 2.0
    assert "| reactive |" in shift_table(report)


def test_with_a_queue_the_forecast_led_replica_serves_earlier(small):
    _, rows = run(small, "burst", horizons=(0.0,))
    assert rows["reactive"]["peak_queue"] > 0
    assert rows["forecast"]["serving_after_s"] is not None
    assert rows["reactive"]["serving_after_s"] is None or \
        rows["forecast"]["serving_after_s"] < rows["reactive"]["serving_after_s"] - 10.0


def test_on_a_ramp_the_floor_looked_ahead_far_enough_has_the_replica_serve_before_the_load_crosses(small):
    """A 10-minute ramp, pools settled (20 minutes' warm-up): reactive serves the upscale delay plus the start
    (90 s) after the load crossed; looked ahead by twice that, the replica serves before."""
    _, rows = run(small, "ramp", warmup_s=1200.0, horizons=(180.0,))
    assert rows["reactive"]["lead_s"] <= -89
    assert rows["lead"]["lead_s"] > 0
    assert rows["lead"]["above_target_s"] < rows["reactive"]["above_target_s"]


def test_on_a_step_no_trend_leads(small):
    """Every request changes at once: the trend appears with the load, so looking ahead serves no earlier."""
    _, rows = run(small, "step", warmup_s=1200.0, error=0.0, rates=(0.15, 0.15, 0.0), horizons=(90.0,))
    assert rows["ahead"]["lead_s"] < 0
    assert rows["ahead"]["serving_after_s"] >= rows["reactive"]["serving_after_s"] - 10.0
