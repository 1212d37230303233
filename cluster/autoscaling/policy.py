"""How many replicas an expert group needs: the custom Ray Serve autoscaling policy of every expert group.

Glossary
- work: replicas' worth of computing the group does now — the sum over its replicas of their busy share
  (`load_meter.py`), or its rows per second over one replica's capacity, whichever is larger.
- capacity: rows per second one replica computes when never idle; configured (`capacity_rows_per_s`,
  measured by `switchyard bench autoscale`) or measured live as rows per busy second.
- floor: rows per second the router expects for the group (queued work); it may raise the need, never lower it.
- needed: work / target_utilization, in replicas (a float).

Decision (hysteresis, so a group at the N-1 edge does not flap):
    up    to ceil(needed)                       when needed > current
    down  to m = ceil(needed / (1 - hysteresis)) when m < current: m replicas would sit below target by the margin
    else  stay
then [min_replicas, max_replicas] and the cost budget's cap; Serve applies its up/down delays around this
(`ray.serve.autoscaling_policy._apply_autoscaling_config`) and its bounds once more.

Cost budget: `max_cost_per_hour`, less the router's replicas, is what every expert replica may cost together.
Each group owns a fair share of those dollars (its minimum replicas at its pool's price, plus an equal part of
the rest); a hot group may borrow what other groups leave unused, and gives it back (after the downscale
delay) when their owners need it. A group on cheaper hardware buys more replicas with the same dollars.

Pure functions first; `ExpertGroupPolicy` only reads an `AutoscalingContext` (which tests build directly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GroupLoad:
    """One group's load over Serve's look-back window, summed over its running replicas."""

    busy: float = 0.0  # replicas' worth of busy time (each replica 0..1)
    rows_per_s: float = 0.0
    in_flight: float = 0.0
    floor_rows_per_s: float = 0.0  # from the router: rows/s it expects to send (queued work)


@dataclass(frozen=True)
class PolicySettings:
    target_utilization: float = 0.6
    hysteresis: float = 0.2
    capacity_rows_per_s: float | None = None
    min_replicas: int = 1
    max_replicas: int = 1


@dataclass(frozen=True)
class CostBudget:
    """What the expert replicas may cost in all (dollars per hour, the router's already paid), and each group's
    price per replica-hour and minimum replicas. Groups in pools on different hardware have different prices."""

    dollars_per_hour: float
    prices: list[float]
    min_replicas: list[int]

    def fair_share(self, group: int) -> float:
        """Dollars per hour `group` owns: its minimum replicas plus an equal part of what is left."""
        least = sum(m * p for m, p in zip(self.min_replicas, self.prices))
        spare = max(0.0, self.dollars_per_hour - least)
        return self.min_replicas[group] * self.prices[group] + spare / len(self.prices)

    def cap(self, group: int, replicas: list[int]) -> int:
        """Most replicas `group` may have while the others have `replicas`: its share plus what they leave."""
        unused = sum(max(0.0, self.fair_share(h) - n * self.prices[h]) for h, n in enumerate(replicas) if h != group)
        return math.floor((self.fair_share(group) + unused) / self.prices[group] + 1e-9)


def replicas_needed(load: GroupLoad, settings: PolicySettings) -> float:
    capacity = settings.capacity_rows_per_s
    if capacity is None and load.busy > 0.05:  # too little busy time says nothing about speed
        capacity = load.rows_per_s / load.busy
    work = load.busy
    if capacity:
        work = max(work, load.rows_per_s / capacity, load.floor_rows_per_s / capacity)
    return work / settings.target_utilization


def decide(current: int, needed: float, settings: PolicySettings, cap: int | None = None) -> int:
    """Replica count for a group that has `current` (Serve's target) and needs `needed` replicas of work."""
    want = current
    if needed > current:
        want = math.ceil(needed)
    else:
        fewer = math.ceil(needed / (1.0 - settings.hysteresis) - 1e-9)
        if fewer < current:
            want = fewer
    upper = settings.max_replicas if cap is None else min(settings.max_replicas, cap)
    return max(settings.min_replicas, min(upper, want))


def load_of(metrics: dict[str, dict]) -> GroupLoad:
    """`AutoscalingContext.aggregated_metrics` (metric -> replica -> value) -> the group's load."""
    def total(name):
        return float(sum(metrics.get(name, {}).values()))

    floor = max(metrics.get("floor_rows_per_s", {}).values(), default=0.0)  # every replica reports the same
    return GroupLoad(total("busy"), total("rows_per_s"), total("in_flight"), float(floor))


def peer_replicas(metrics: dict[str, dict], num_groups: int, fallback: int) -> list[int]:
    """Replicas of every group as the registry counted them (reported by each replica as `replicas_g<i>`)."""
    out = []
    for g in range(num_groups):
        values = list(metrics.get(f"replicas_g{g}", {}).values())
        out.append(round(max(values)) if values else fallback)
    return out


class ExpertGroupPolicy:
    """`AutoscalingPolicy(policy_function="switchyard.cluster.autoscaling.policy:ExpertGroupPolicy",
    policy_kwargs=...)`: instantiated once per deployment by Serve's controller, called every tick. It must not
    block (it runs in the controller's event loop): it reads the context and computes, nothing more."""

    def __init__(self, group: int, num_groups: int, target_utilization: float, hysteresis: float,
                 min_replicas: int, max_replicas: int, capacity_rows_per_s: float | None = None,
                 budget_dollars_per_hour: float | None = None, group_prices: list[float] | None = None,
                 group_min_replicas: list[int] | None = None):
        """The budget's arguments: dollars per hour for every group's replicas, and each group's price and
        minimum (the groups may be in pools with different settings)."""
        self.group, self.num_groups = group, num_groups
        self.settings = PolicySettings(target_utilization, hysteresis, capacity_rows_per_s, min_replicas,
                                       max_replicas)
        self.budget = None
        if budget_dollars_per_hour is not None:
            self.budget = CostBudget(budget_dollars_per_hour, list(group_prices),
                                     list(group_min_replicas or [min_replicas] * num_groups))

    def __call__(self, ctx) -> tuple[int, dict]:
        metrics = ctx.aggregated_metrics or {}
        load = load_of(metrics)
        needed = replicas_needed(load, self.settings)
        cap = None
        if self.budget is not None:
            peers = peer_replicas(metrics, self.num_groups, self.settings.min_replicas)
            peers[self.group] = ctx.target_num_replicas
            cap = self.budget.cap(self.group, peers)
        target = decide(ctx.target_num_replicas, needed, self.settings, cap)
        state = {**ctx.policy_state, "needed": needed, "busy": load.busy, "rows_per_s": load.rows_per_s}
        return target, state
