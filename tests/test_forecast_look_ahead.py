"""The groups' floor looked ahead by the time a replica takes to serve (forecast.looked_ahead, demand.FloorTrend):
the pure trend on synthetic series, the floor the router reports with it, and its config. No Ray."""

import threading

import numpy as np
import pytest

from switchyard.cluster.autoscaling.demand import FloorTrend, report_floors
from switchyard.cluster.autoscaling.forecast import looked_ahead, trend_window_s
from switchyard.configs.serve import AppConfig

SECONDS = np.arange(180.0)  # the router's once-a-second ticks


def test_a_linear_ramp_is_extrapolated_exactly():
    ramp = 10.0 + 2.0 * SECONDS
    assert looked_ahead(SECONDS, ramp, 90.0, 180.0) == pytest.approx(10.0 + 2.0 * (179.0 + 90.0))
    # only the window's points count: flat before it, a ramp within it
    bent = np.where(SECONDS < 100, 50.0, 50.0 + 3.0 * (SECONDS - 100))
    assert looked_ahead(SECONDS, bent, 20.0, 60.0) == pytest.approx(50.0 + 3.0 * (179.0 + 20.0 - 100.0))


def test_a_flat_series_gives_itself():
    assert looked_ahead(SECONDS, np.full(180, 42.0), 90.0, 180.0) == pytest.approx(42.0)


def test_a_falling_trend_gives_the_present_not_less():
    falling = 300.0 - SECONDS
    assert looked_ahead(SECONDS, falling, 90.0, 180.0) == falling[-1]


def test_no_horizon_or_too_few_points_give_the_present():
    ramp = 2.0 * SECONDS
    assert looked_ahead(SECONDS, ramp, 0.0, 180.0) == ramp[-1]  # exactly, not the fitted line
    assert looked_ahead([5.0], [7.0], 90.0, 180.0) == 7.0
    assert looked_ahead([5.0, 5.0], [7.0, 9.0], 90.0, 180.0) == 9.0  # no spread in time: no slope
    assert looked_ahead([], [], 90.0, 180.0) == 0.0


def test_noise_around_a_level_does_not_raise_the_floor_far_above_the_data():
    """White noise of +-20% around 100, looked 90 s ahead over the default window (180 s): the line stays near
    the level, so the floor is the present value or a little above the level, never above the data."""
    window = trend_window_s(90.0)
    floors = []
    for seed in range(50):
        noisy = 100.0 + np.random.default_rng(seed).uniform(-20.0, 20.0, len(SECONDS))
        floor = looked_ahead(SECONDS, noisy, 90.0, window)
        assert noisy[-1] <= floor <= noisy.max()
        assert floor == noisy[-1] or floor < 110.0
        floors.append(floor)
    assert np.mean(floors) < 110.0


def test_the_window_is_twice_the_horizon_and_at_least_ten_ticks():
    assert trend_window_s(90.0) == 180.0 and trend_window_s(1.0) == 10.0


def test_floor_trend_looks_each_group_ahead_by_its_own_horizon():
    trend = FloorTrend([10.0, 0.0, 30.0])
    for t in range(100):
        ahead = trend.ahead(float(t), [5.0 * t, 5.0 * t, 100.0 - t])
    assert ahead[0] == pytest.approx(5.0 * (99 + 10))  # rising: looked 10 s ahead
    assert ahead[1] == 5.0 * 99  # horizon 0: the forecast now
    assert ahead[2] == 1.0  # falling: the present
    assert len(trend._times) <= max(trend.windows_s) + 1  # the history is trimmed to the longest window


class Registry:
    """The registry's `report_floor.remote(floors)`: records the reports, and sets `stop` after `reports`."""

    def __init__(self, stop: threading.Event, reports: int):
        self.stop, self.wanted, self.reports = stop, reports, []
        self.report_floor = self

    def remote(self, floors):
        self.reports.append(floors)
        if len(self.reports) == self.wanted:
            self.stop.set()


class Demand:
    """Rows/s measured per group, the same every tick."""

    def __init__(self, rows_per_s: list[float]):
        self.rows_per_s = rows_per_s

    def take(self):
        return self.rows_per_s


def test_the_forecast_raises_the_reported_floor_never_lowers_it():
    stop, seen = threading.Event(), []
    registry = Registry(stop, 1)

    def forecast(measured):
        seen.append(measured)
        return np.array([50.0, 40.0])  # below the measured floor for group 0, above it for group 1

    report_floors(Demand([100.0, 10.0]), ["g0", "g1"], registry, lambda: (4, 4), stop, every_s=0.01,
                  forecast=forecast)
    # the queue floor doubles what was sent (4 running, 4 waiting); the forecast wins only where it is higher
    assert registry.reports[0] == {"g0": 200.0, "g1": 40.0}
    assert seen[0] == [100.0, 10.0]


def test_the_reported_floor_looks_ahead_along_its_trend():
    stop, now = threading.Event(), [0.0]
    registry = Registry(stop, 20)

    def forecast(measured):  # group 0 rises 10 rows/s every second; group 1 stays below the 100 rows/s it is sent
        now[0] += 1.0
        return [10.0 * now[0], 50.0]

    report_floors(Demand([0.0, 100.0]), ["g0", "g1"], registry, lambda: (4, 0), stop, every_s=0.001,
                  forecast=forecast, trend=FloorTrend([30.0, 30.0]), clock=lambda: now[0])
    assert registry.reports[-1]["g0"] == pytest.approx(10.0 * (20 + 30))
    assert registry.reports[-1]["g1"] == pytest.approx(100.0)  # the larger of sent and forecast, flat


def test_the_horizon_is_the_upscale_delay_plus_the_replica_start_plus_the_lead():
    def config(**autoscaling):
        return AppConfig.model_validate({"model": "m", "num_groups": 2, "expert_pool": {"autoscaling": autoscaling}})

    on = config(forecast=True, upscale_delay_s=10, replica_start_s=60)
    assert on.expert_pool.autoscaling.forecast_horizon_s == 70.0
    assert on.forecast_horizons_s() == [70.0, 70.0]
    assert config(forecast=True, upscale_delay_s=10, replica_start_s=60, forecast_lead_s=30).forecast_horizons_s() \
        == [100.0, 100.0]
    serve_fields = on.expert_pool.autoscaling.to_serve()
    assert "replica_start_s" not in serve_fields and "forecast_lead_s" not in serve_fields  # the router's
    assert config(upscale_delay_s=10).forecast_horizons_s() == [0.0, 0.0]  # forecast off
    for field in ("replica_start_s", "forecast_lead_s"):  # a setting that would do nothing is refused
        with pytest.raises(ValueError, match=f"{field}: only the forecast's look-ahead uses it"):
            config(upscale_delay_s=10, **{field: 60})
    assert config(forecast=True).forecast_horizons_s() == [1.0, 1.0]  # local defaults: 1 s delay, start 0
    for field in ("replica_start_s", "forecast_lead_s"):
        with pytest.raises(ValueError, match=field):
            config(forecast=True, **{field: -1})
    pooled = AppConfig.model_validate({
        "model": "m", "num_groups": 2, "expert_pool": {"autoscaling": {"forecast": True, "replica_start_s": 60}},
        "expert_pools": [{"name": "cold", "groups": [1], "autoscaling": {"forecast": True, "replica_start_s": 20}}]})
    assert pooled.forecast_horizons_s() == [61.0, 21.0]
