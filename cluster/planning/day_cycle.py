"""A plan served through a day's cycle (or a burst), autoscaled against fixed at peak: what scaling saves."""

from __future__ import annotations

from dataclasses import replace

from switchyard.cluster.planning.hardware import HardwareProfile
from switchyard.cluster.planning.model_shape import ModelShape
from switchyard.cluster.planning.search import Plan
from switchyard.cluster.planning.simulator import ScalingSettings, simulate
from switchyard.cluster.planning.workloads import Workload

# Serve's delays for a day at GPU scale: scale up within a minute, down after ten; a replica that loads its
# weights (tens of GB from local disk) takes minutes to start.
# The policy's target utilisation is Switchyard's default (0.6) unless given.
DAY_SETTINGS = ScalingSettings(autoscale=True, tick_s=10.0, policy_period_s=10.0, upscale_delay_s=30.0,
                               downscale_delay_s=600.0, replica_start_s=180.0)


def workload_for(plan: Plan, kind: str, hours: float, output_tokens: int = 256, trough: float = 0.25) -> Workload:
    """The plan's throughput is the peak: requests per second at peak = tokens/s / output tokens, at 90%."""
    duration = hours * 3600.0
    peak = 0.9 * plan.tokens_per_s / output_tokens
    return Workload(kind, peak, duration, 1024, output_tokens, trough_fraction=trough, burst_start_s=duration / 3,
                    burst_s=duration / 3, base_fraction=trough)


VARIANTS = {
    "Switchyard's policy as configured by default (target utilisation 0.6, groups report busy time)": {},
    "target utilisation 0.8": {"target_utilization": 0.8},
    "target utilisation 0.8, groups report rows/s against their rows/s at peak": {"target_utilization": 0.8,
                                                                                   "group_signal": "rows"},
}


def compare_day(m: ModelShape, hw: HardwareProfile, plan: Plan, kind: str = "day", hours: float = 24.0,
                settings: ScalingSettings = DAY_SETTINGS, trough: float = 0.25, bounds: bool = False) -> dict:
    """Fixed at peak against the autoscaled variants; the first variant is the headline. `bounds`: also what
    limits the saving (saving_bounds.py: a run per brake on scaling taken off)."""
    workload = workload_for(plan, kind, hours, trough=trough)
    fixed = simulate(m, hw, plan.deployment, workload, replace(settings, autoscale=False))
    variants, runs = [], []
    for label, change in VARIANTS.items():
        auto = simulate(m, hw, plan.deployment, workload, replace(settings, **change))
        runs.append((label, replace(settings, **change), auto))
        variants.append({"policy": label, "autoscaled": auto.summary(),
                         "saving": 1.0 - auto.device_hours / fixed.device_hours,
                         "replica_saving": 1.0 - auto.replica_hours / fixed.replica_hours,
                         "itl_ratio": auto.itl_p95_s / fixed.itl_p95_s})
    out = {"workload": f"{kind}, {hours:g} h, peak {workload.peak_tokens_per_s:,.0f} tok/s, trough "
                       f"{workload.trough_fraction:.0%} of peak", "plan": plan.describe(),
           "fixed_at_peak": fixed.summary(), "variants": variants}
    if bounds:
        from switchyard.cluster.planning.saving_bounds import saving_bounds

        out["bounds"] = saving_bounds(m, hw, plan, workload, fixed, runs)
    return out
