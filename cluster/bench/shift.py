"""What a shift of traffic costs an autoscaled setup, for `switchyard bench autoscale`: read from samples taken
every half second during the phase that makes another group hot (the shift is the phase's start).

    serving after    seconds from the shift until the hot group has one more replica in the registry: its
                     experts loaded and joined, so the router's transports use it from their next refresh
    load crosses     seconds from the shift until the hot group's rows/s first pass its target
                     (target_utilization x capacity x the replicas it had at the shift)
    lead             load crosses - serving after: > 0 when the new replica served before the load passed
                     its target (None when either never happened)
    above target     seconds the hot group's rows/s were above target_utilization x capacity x its replicas
                     in the registry then
    p95 ITL 30 s     p95 inter-token latency of the requests that finished from the shift to 30 s after the
                     mix stopped moving (30 s after a step; a ramp's length plus 30 s after a gradual shift)
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import numpy as np

AFTER_SHIFT_S = 30.0
TARGET_UTILIZATION = 0.6  # the policy's default, which the bench's setups keep


@dataclass(frozen=True)
class Sample:
    at: float  # seconds after the phase (the shift) began
    registered: list[int]  # replicas of each group in the registry
    rows: list[int]  # rows the router has sent each group, running totals (`tokens_per_group`)
    forecast: list[float] | None = None  # the router's forecast rows/s per group, with the forecast on


@dataclass(frozen=True)
class ShiftReport:
    hot_group: int
    serving_after_s: float | None
    crosses_after_s: float | None
    above_target_s: float
    p95_itl_s: float | None

    @property
    def lead_s(self) -> float | None:
        if self.serving_after_s is None or self.crosses_after_s is None:
            return None
        return self.crosses_after_s - self.serving_after_s


def shift_report(samples: list[Sample], itl_at: list[tuple[float, float]], capacity: float,
                 target_utilization: float, ramp_s: float = 0.0) -> ShiftReport:
    """samples in time order; itl_at: (seconds after the shift a request finished, its ITL); ramp_s: how long
    the mix moved (0 for a step)."""
    rows = np.array([s.rows for s in samples], np.float64)  # [N, G]
    hot = int(np.argmax(rows[-1] - rows[0])) if len(samples) > 1 else 0
    at = np.array([s.at for s in samples])
    start = samples[0].registered[hot] if samples else 0
    serving = next((s.at for s in samples if s.registered[hot] > start), None)
    crosses, above = None, 0.0
    for i in range(1, len(samples)):
        span = at[i] - at[i - 1]
        rate = (rows[i, hot] - rows[i - 1, hot]) / max(span, 1e-9)
        if crosses is None and rate > target_utilization * capacity * start:
            crosses = float(at[i - 1])
        if rate > target_utilization * capacity * samples[i - 1].registered[hot]:
            above += span
    recent = [itl for t, itl in itl_at if 0.0 <= t <= ramp_s + AFTER_SHIFT_S]
    return ShiftReport(hot, serving, crosses, above, float(np.percentile(recent, 95)) if recent else None)


SHIFT_HEADERS = ["setup", "hot group", "serving after s", "load crosses target s", "lead s", "above target s",
                 "p95 ITL ms, to 30 s after", "replica-hours (all phases)"]


def shift_row(setup: str, report: ShiftReport, replica_hours: float) -> list:
    def seconds(value):
        return "never" if value is None else value

    return [setup, f"g{report.hot_group}", seconds(report.serving_after_s), seconds(report.crosses_after_s),
            "-" if report.lead_s is None else report.lead_s, report.above_target_s,
            None if report.p95_itl_s is None else 1000 * report.p95_itl_s, replica_hours]


def shift_sample(app: str, stats_url: str, at: float) -> Sample:
    """The registry's replicas of each group and the router's rows sent to each (and forecast), now."""
    import ray
    from switchyard.cluster.deployments.registry import get_registry

    names = [f"{app}-experts-{g}" for g in range(2)]
    _, registered = ray.get(get_registry(app).demand.remote(names[0], names))
    stats = httpx.get(stats_url, timeout=10).json()
    forecast = stats.get("forecast")
    return Sample(at, registered, stats["tokens_per_group"], forecast and forecast["forecast_rows_per_s"])


def shift_rows(results: list, capacity: float, ramp_s: float = 0.0) -> list[list]:
    """`PhaseResult`s -> the autoscaled setups' shift from prose to number tables (shift.py), with their replica-hours."""
    rows = []
    for setup in dict.fromkeys(r.setup for r in results if not r.setup.startswith("fixed")):
        mine = [r for r in results if r.setup == setup]
        shifted = next(r for r in mine if r.phase == "numbers")
        report = shift_report(shifted.samples, shifted.itl_at, capacity, TARGET_UTILIZATION, ramp_s)
        rows.append(shift_row(setup, report, sum(r.replica_hours(1) for r in mine)))
    return rows
