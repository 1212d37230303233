"""Forecast-led against reactive scaling on a shift of traffic, in the simulator (`switchyard plan --simulate
shift`): the figures of `switchyard bench autoscale --forecast` (cluster/bench/shift.py) at DeepSeek scale.

The workload: a share of the plan's capacity, with one group hot (HOT x the mean share) until the shift, then
another group hot. Requests keep the mix they arrived with, so the new hot group's load grows as requests turn
over. Three cases (CASES):
- step: only the mix changes, at 30% of capacity. The routers have free slots, no request waits, so the
  forecast learns of a request's load when its decode starts, as the measured load does: the setups tie.
- burst: the rate steps from 10% to 40% of capacity a minute before the mix changes. The routers must grow
  (Serve's upscale delay plus a replica's start), requests queue meanwhile, and the forecast sees each one's
  load when it arrives: its horizon is the queueing time. It leads the load only if that is longer than the
  upscale delay plus the start.
- ramp: as the step, but the mix moves from one hot group to the other linearly over RAMP_S (topics drift over
  minutes rather than switch at once). The floor's trend, looked ahead by the upscale delay plus a replica's
  start, asks for the replica that long before the load it points to arrives. `ramp_sweep` runs it over the
  ramp lengths RAMPS.

Forecast-led: the policy also gets the floor the live router reports, the larger of the rows/s a group is sent
and the rows/s its running and waiting requests will send it, the latter under-forecast by FORECAST_ERROR (the
prompt-only guess's per-group load error, docs/affinity.md: 0.067 with 4 groups; 0.103 for prefilled
requests; we take 0.1); as it is now (horizon 0, the floor before the look-ahead), and looked ahead along its
trend (demand.FloorTrend, as the live router reports it) by each of `lead_horizons`.

Per setup, as the live table: seconds from the shift to the hot group's next replica ready (serving), to its
work first passing target_utilization x the replicas it had at the shift (load crosses), their difference
(lead: > 0 when the replica served first), seconds its work was above target_utilization x its ready
replicas, p95 inter-token latency from the shift to 30 s after the mix stops moving (decode steps weighted by
the tokens they made, not finished requests' means), and replica-hours from the shift to the end.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from switchyard.cluster.planning.hardware import HardwareProfile
from switchyard.cluster.planning.model_shape import ModelShape
from switchyard.cluster.planning.search import Plan
from switchyard.cluster.planning.simulator import ScalingSettings, SimResult, simulate, weighted_quantile
from switchyard.cluster.planning.workloads import Workload

HOT = 1.5  # the hot group's share over the mean
FORECAST_ERROR = 0.1
AFTER_SHIFT_S = 30.0
# the simulator's defaults (1 s ticks and controller period, 30 s up / 600 s down, a replica ready 60 s after
# it is asked for); the warm-up lets the pools, which start at one replica, settle before the shift. Groups
# report rows/s against a replica's at peak (what a configured capacity gives live): the planned groups' calls
# are latency-bound, busy near 1 at any load, and a busy signal would hold every group at its most replicas
SHIFT_SETTINGS = ScalingSettings(group_signal="rows")
WARMUP_S = 1800.0  # more than the downscale delay after the start's transient
AFTER_S = 600.0
# the rate over the plan's capacity before and after it steps, how long before the shift it steps, and how long
# the mix takes to move. The most replicas a group has are the plan's, which carry target_utilization of its
# capacity at the mean share: the rates keep the hot group within them. RAMP_S: ten minutes, an assumption (no
# trace of a real topic drift was measured here); RAMPS, the ramp lengths `ramp_sweep` compares
RAMP_S = 600.0
RAMPS = (0.0, 120.0, 300.0, 600.0)
CASES = {"step": (0.3, 0.3, 0.0, 0.0), "burst": (0.1, 0.4, 60.0, 0.0), "ramp": (0.3, 0.3, 0.0, RAMP_S)}


@dataclass(frozen=True)
class ShiftFigures:
    setup: str
    serving_after_s: float | None
    crosses_after_s: float | None
    above_target_s: float
    p95_itl_s: float
    replica_hours: float
    peak_queue: float  # most requests waiting after the shift: the forecast's horizon exists only with a queue

    @property
    def lead_s(self) -> float | None:
        if self.serving_after_s is None or self.crosses_after_s is None:
            return None
        return self.crosses_after_s - self.serving_after_s


def shifted_mix(num_groups: int, shift_s: float, hot: float = HOT, ramp_s: float = 0.0):
    """mix(t): group 0 hot before the shift, group 1 after (over `ramp_s`, linearly), the rest equal."""
    def one_hot(g: int) -> np.ndarray:
        h = min(hot, float(num_groups)) / num_groups
        out = np.full(num_groups, (1.0 - h) / (num_groups - 1))
        out[g] = h
        return out

    before, after = one_hot(0), one_hot(1 % num_groups)

    def mix(t: float) -> np.ndarray:
        x = 0.0 if t < shift_s else 1.0 if ramp_s <= 0 else min(1.0, (t - shift_s) / ramp_s)
        return (1.0 - x) * before + x * after

    return mix


def shift_workload(plan: Plan, before: float, after: float, step_s: float, duration_s: float,
                   output_tokens: int = 256) -> Workload:
    """A step of the rate at `step_s` (`before` -> `after`, fractions of the plan's tokens/s), as a burst that
    lasts to the end (the "bursty" workload's base is the rate outside it)."""
    peak = after * plan.tokens_per_s / output_tokens
    return Workload("bursty", peak, duration_s, 1024, output_tokens, burst_start_s=step_s,
                    burst_s=duration_s - step_s, base_fraction=before / after)


def figures(setup: str, result: SimResult, shift_s: float, hot: int, cold: int, utilization: float,
            most: int, ramp_s: float = 0.0) -> ShiftFigures:
    """The live bench's figures, read from the simulator's per-tick trace. Replicas a group that stayed cold has
    are the baseline: in the burst the rate alone adds replicas to every group, which the shift did not ask for
    (a hot group at its most replicas counts as served, though a cold one may be there too)."""
    after = [row for row in result.trace if row[0] >= shift_s]
    tick = after[1][0] - after[0][0] if len(after) > 1 else 1.0
    at_shift = after[0][1][hot]
    serving = next((t - shift_s for t, ready, _, _ in after
                    if ready[hot] > at_shift and (ready[hot] > ready[cold] or ready[hot] == most)), None)
    crosses = next((t - shift_s for t, ready, work, _ in after
                    if work[hot] > utilization * max(at_shift, ready[cold])), None)
    above = tick * sum(1 for _, ready, work, _ in after if work[hot] > utilization * ready[hot])
    window = [s for t, _, _, steps in after if t < shift_s + ramp_s + AFTER_SHIFT_S for s in steps]
    p95 = weighted_quantile([s for s, _ in window], [w for _, w in window], 0.95)
    replicas = tick * sum(r + sum(g) for t, r, g, _ in result.timeline if t >= shift_s) / 3600.0
    queue = max((q for t, _, _, q in result.timeline if t >= shift_s), default=0.0)
    return ShiftFigures(setup, serving, crosses, above, p95, replicas, queue)


def compare_shift(m: ModelShape, hw: HardwareProfile, plan: Plan, case: str = "step",
                  settings: ScalingSettings = SHIFT_SETTINGS, error: float = FORECAST_ERROR,
                  warmup_s: float = WARMUP_S, after_s: float = AFTER_S, ramp_s: float | None = None,
                  rates: tuple[float, float, float] | None = None,
                  horizons: tuple[float, ...] | None = None) -> dict:
    """Reactive against forecast-led on the same arrivals (same seed) and the same shift, forecast-led once per
    horizon of `horizons` (default `lead_horizons`, and 0: the floor as it is now); `rates` instead of the
    case's (before, after, seconds before the shift), `ramp_s` instead of its ramp. The run lasts `after_s` past
    the end of the ramp."""
    before, after, early, case_ramp = CASES[case]
    if rates is not None:
        before, after, early = rates
    ramp_s = case_ramp if ramp_s is None else ramp_s
    G = plan.deployment.num_groups
    workload = shift_workload(plan, before, after, warmup_s - early, warmup_s + ramp_s + after_s)
    mix = shifted_mix(G, warmup_s, ramp_s=ramp_s)
    setups = [("reactive", None, None)]
    for horizon in (0.0, *lead_horizons(settings)) if horizons is None else horizons:
        setups.append((f"forecast-led, {horizon:g} s ahead (error {error:.0%})", error, horizon))
    rows = []
    for setup, forecast, horizon in setups:
        # the forecast from a minute before the rate or the mix changes: the same settled pools in both setups
        # (where they settle depends on the path, within the policy's hysteresis)
        forecasting = replace(settings, forecast_error=forecast, forecast_from_s=warmup_s - early - 60.0,
                              forecast_horizon_s=horizon)
        result = simulate(m, hw, plan.deployment, workload, forecasting, mix=mix)
        shift = figures(setup, result, warmup_s, 1 % G, (G - 1) % G, settings.target_utilization,
                        plan.deployment.group_replicas, ramp_s)
        rows.append({**shift.__dict__, "lead_s": shift.lead_s, "horizon_s": horizon})
    return {"case": case, "plan": plan.describe(), "replica_start_s": settings.replica_start_s,
            "upscale_delay_s": settings.upscale_delay_s,
            "workload": f"{before:.0%} of capacity, group 0 at {HOT:g}x the mean share; at {warmup_s:g} s group 1 "
                        f"{'ramps' if ramp_s else 'jumps'} to it{f' over {ramp_s:g} s' if ramp_s else ''}"
                        + (f"; the rate to {after:.0%} {early:g} s before" if after != before else ""),
            "ramp_s": ramp_s, "rows": rows}


def lead_horizons(settings: ScalingSettings) -> tuple[float, float]:
    """The look-aheads compared: the upscale delay plus a replica's start (a replica asked for on the trend
    serves as the trend's mean load crosses the target, which the load's noisy ticks first did earlier), and
    twice that (it serves a delay plus a start before: `forecast_lead_s` live)."""
    base = settings.upscale_delay_s + settings.replica_start_s
    return base, 2.0 * base


def ramp_sweep(m: ModelShape, hw: HardwareProfile, plan: Plan, ramps: tuple[float, ...] = RAMPS,
               known: tuple[dict, ...] = (), settings: ScalingSettings = SHIFT_SETTINGS) -> dict:
    """The ramp case at each length of `ramps`, reactive against forecast-led at `lead_horizons`: where the lead
    turns positive (a ramp longer than the horizon) and where it cannot (a step). A report of `known` on the
    same workload (the step is a ramp of 0 s) stands for its ramp's run."""
    reused = {r["ramp_s"]: r for r in known if r["case"] in ("step", "ramp")}
    reports = [reused.get(ramp) or compare_shift(m, hw, plan, "ramp", settings, ramp_s=ramp,
                                                 horizons=lead_horizons(settings)) for ramp in ramps]
    return {"plan": plan.describe(), "workload": reports[0]["workload"].split(";")[0],
            "horizons": lead_horizons(settings), "reports": reports}


def _s(x: float | None) -> str:
    return "never" if x is None else f"{x:.0f}"


def shift_table(report: dict) -> str:
    """The table of docs/operations.md, "Forecast-led against reactive scaling, measured"."""
    lines = [(f"shift ({report['case']}): {report['workload']}; replicas start {report['replica_start_s']:g} s "
              f"after Serve's {report['upscale_delay_s']:g} s upscale delay"), f"  plan: {report['plan']}",
             ("| setup | serving after s | load crosses target s | lead s | above target s | p95 ITL to 30 s after "
              "the mix settles | replica-hours | most queued |"), "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['setup']} | {_s(r['serving_after_s'])} | {_s(r['crosses_after_s'])} | "
                     f"{_s(r['lead_s'])} | {r['above_target_s']:.0f} | {1000 * r['p95_itl_s']:.1f} ms | "
                     f"{r['replica_hours']:.2f} | {r['peak_queue']:.0f} |")
    return "\n".join(lines)


def ramp_table(sweep: dict) -> str:
    """Per ramp length: reactive and forecast-led at each horizon of the sweep, side by side."""
    horizons = sweep["horizons"]
    setups = " / ".join(["reactive"] + [f"{h:g} s ahead" for h in horizons])
    lines = [f"ramp sweep: {sweep['workload']}; group 1 takes the hot share over each ramp; each cell: {setups}",
             f"  plan: {sweep['plan']}", "| ramp s | lead s | above target s | p95 ITL ms | replica-hours |",
             "|---|---|---|---|---|"]
    for report in sweep["reports"]:
        by_horizon = {r["horizon_s"]: r for r in report["rows"]}
        rows = [by_horizon[h] for h in (None, *horizons)]
        cells = [" / ".join(_s(r[key]) for r in rows) for key in ("lead_s", "above_target_s")]
        cells.append(" / ".join(f"{1000 * r['p95_itl_s']:.1f}" for r in rows))
        cells.append(" / ".join(f"{r['replica_hours']:.2f}" for r in rows))
        lines.append(f"| {report['ramp_s']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
