"""What bounds the saving of a day's cycle: each brake on scaling taken off in turn, in the simulator.

From the best simulated policy that keeps p95 ITL within 1.25x of fixed at peak (the goal's bound), one run per
counterfactual, everything else equal:
- Serve's delays as the Helm chart sets them for a GPU cluster (10 s up, 120 s down; the day's own are 30 s and
  600 s), the replica start unchanged;
- no Serve delays and replicas ready at once: what reacting late costs;
- no hysteresis: on falling load the policy keeps up to 1 / (1 - hysteresis) x what it needs, so as not to flap;
- neither.
And two figures no run needs:
- the pools that cannot scale, those whose most replicas are their fewest (a group with one replica at peak
  cannot go below it): their GPU-hours, the same autoscaled or not;
- a perfect scaler: every pool at load / utilisation of its peak size each moment, within its bounds (load: the
  workload's rate over the plan's capacity). At utilisation 1 this is what the day's shape allows at all; at the
  policy's target it is what the policy would save with no delay and no hysteresis. Both hold the step time
  fixed, which at low load is shorter, so the simulator can beat them by a little.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from switchyard.cluster.planning.hardware import HardwareProfile
from switchyard.cluster.planning.model_shape import ModelShape
from switchyard.cluster.planning.search import Plan
from switchyard.cluster.planning.simulator import ScalingSettings, SimResult, simulate
from switchyard.cluster.planning.workloads import Workload

ITL_BOUND = 1.25  # the goal: p95 ITL within this of fixed at peak

COUNTERFACTUALS = {
    "Serve's delays as the Helm chart sets them (10 s up, 120 s down)": {"upscale_delay_s": 10.0,
                                                                         "downscale_delay_s": 120.0},
    "no Serve delays, replicas ready at once": {"upscale_delay_s": 0.0, "downscale_delay_s": 0.0,
                                                "replica_start_s": 0.0},
    "no hysteresis": {"hysteresis": 0.0},
    "no delays and no hysteresis": {"upscale_delay_s": 0.0, "downscale_delay_s": 0.0, "replica_start_s": 0.0,
                                    "hysteresis": 0.0},
}


def perfect_scaler_hours(plan: Plan, workload: Workload, tick_s: float, utilisation: float,
                         min_replicas: int = 1) -> float:
    """GPU-hours of pools sized to load / utilisation at every tick, within [min_replicas, peak size]."""
    d = plan.deployment
    capacity = plan.tokens_per_s / workload.output_tokens  # requests per second the plan serves
    ticks = np.arange(int(np.ceil(workload.duration_s / tick_s))) * tick_s + tick_s / 2
    load = np.array([workload.rate(t) for t in ticks]) / capacity
    pools = [(d.routers, d.gpus_per_router)] + [(d.group_replicas, d.gpus_per_group_replica)] * d.num_groups
    gpus = sum(np.clip(size * load / utilisation, min(min_replicas, size), size) * each for size, each in pools)
    return float(gpus.sum() * tick_s / 3600.0)


def saving_bounds(m: ModelShape, hw: HardwareProfile, plan: Plan, workload: Workload, fixed: SimResult,
                  variants: list[tuple[str, ScalingSettings, SimResult]]) -> dict:
    """`variants`: (label, settings, result) as compare_day ran them; the best within the ITL bound is the base."""
    within = [v for v in variants if v[2].itl_p95_s <= ITL_BOUND * fixed.itl_p95_s] or variants
    label, settings, base = max(within, key=lambda v: 1.0 - v[2].device_hours / fixed.device_hours)

    def row(what: str, result: SimResult) -> dict:
        return {"what": what, "device_hours": result.device_hours,
                "saving": 1.0 - result.device_hours / fixed.device_hours,
                "replica_saving": 1.0 - result.replica_hours / fixed.replica_hours,
                "itl_ratio": result.itl_p95_s / fixed.itl_p95_s}

    rows = [row("as simulated", base)]
    for what, change in COUNTERFACTUALS.items():
        rows.append(row(what, simulate(m, hw, plan.deployment, workload, replace(settings, **change))))
    d = plan.deployment
    stuck = [(what, size, each, count) for what, size, each, count in
             (("routers", d.routers, d.gpus_per_router, 1),
              (f"{d.num_groups} groups", d.group_replicas, d.gpus_per_group_replica, d.num_groups))
             if size <= settings.min_replicas]
    stuck_hours = sum(size * each * count for _, size, each, count in stuck) * workload.duration_s / 3600.0
    ideal = {u: 1.0 - perfect_scaler_hours(plan, workload, settings.tick_s, u, settings.min_replicas)
             / fixed.device_hours for u in (1.0, settings.target_utilization)}
    return {"base": label, "rows": rows,
            "unscalable": {"pools": [f"{what} at {size} replica{'s' * (size > 1)} x {each} GPU"
                                     for what, size, each, _ in stuck], "device_hours": stuck_hours,
                           "share": stuck_hours / fixed.device_hours},
            "perfect_scaler": {"utilisation 1": ideal[1.0],
                               f"utilisation {settings.target_utilization:g}": ideal[settings.target_utilization]}}
