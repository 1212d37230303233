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

Cost budget: `max_cost_per_hour` buys a number of expert replicas (after the router's). Each group owns a fair
share (its minimum plus an equal part of the rest); a hot group may borrow the shares other groups leave
unused, and gives them back (after the downscale delay) when their owners need them.

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
class ReplicaBudget:
    """Expert replicas the cost bound allows in all, and each group's minimum."""

    total: int
    min_replicas: list[int]

    def fair_share(self, group: int) -> int:
        spare = max(0, self.total - sum(self.min_replicas))
        groups = len(self.min_replicas)
        return self.min_replicas[group] + spare // groups + (1 if group < spare % groups else 0)

    def cap(self, group: int, replicas: list[int]) -> int:
        """Most replicas `group` may have while the others have `replicas`: its share plus what they leave."""
        unused = sum(max(0, self.fair_share(h) - n) for h, n in enumerate(replicas) if h != group)
        return self.fair_share(group) + unused


def replicas_budget(max_cost_per_hour: float, expert_price: float, router_replicas: int, router_price: float) -> int:
    """Expert replicas that `max_cost_per_hour` pays for once the router's replicas are paid."""
    return int(math.floor((max_cost_per_hour - router_replicas * router_price) / expert_price + 1e-9))


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
                 budget_total: int | None = None):
        self.group, self.num_groups = group, num_groups
        self.settings = PolicySettings(target_utilization, hysteresis, capacity_rows_per_s, min_replicas,
                                       max_replicas)
        self.budget = None if budget_total is None else ReplicaBudget(budget_total, [min_replicas] * num_groups)

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
