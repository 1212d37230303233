"""The simulator's pools and one period of Serve's controller over them: a pool's ready and starting replicas,
the metrics each replica would report (a router's batch slots held, a group's busy share or rows/s, the
forecast's floor), Serve's decision (serve_step.py) and the resize it leads to. Split from simulator.py, which
calls `autoscale_pools` every controller period.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from switchyard.cluster.autoscaling.policy import ExpertGroupPolicy
from switchyard.cluster.planning.performance import decode_step, experts_s
from switchyard.cluster.planning.serve_step import serve_decision

if TYPE_CHECKING:  # the simulator imports this module
    from switchyard.cluster.planning.simulator import ScalingSettings


@dataclass
class Pool:
    name: str
    policy: ExpertGroupPolicy
    devices_per_replica: int
    max_replicas: int
    ready: int
    starting: list[float] = field(default_factory=list)  # times at which starting replicas become ready
    state: dict = field(default_factory=dict)
    config: object = None  # Serve's AutoscalingConfig of the pool

    @property
    def target(self) -> int:
        return self.ready + len(self.starting)


def group_shares(num_groups: int, imbalance: float) -> np.ndarray:
    """Per-group share of (token, expert) pairs: one group at `imbalance` x the mean, the rest equal."""
    if num_groups == 1:
        return np.ones(1)
    hot = min(imbalance, float(num_groups)) / num_groups
    return np.array([hot] + [(1.0 - hot) / (num_groups - 1)] * (num_groups - 1))


def autoscale_pools(m, hw, peak, routers: Pool, groups: list[Pool], shares, held: float, made: float, step: float,
               t: float, settings: ScalingSettings, floors=None) -> list[float]:
    """One controller period: each pool's metrics as its replicas would report them, then Serve's decision.
    Returns each group's work in replicas' worth (busy summed over its replicas)."""
    tick = settings.tick_s
    per_router = held / max(1, routers.ready) / peak.batch_per_router  # slots used (+ queue) per replica
    ids = [f"r{j}" for j in range(max(1, routers.ready))]
    metrics = {"busy": {r: per_router for r in ids}, "rows_per_s": {r: made / tick / len(ids) for r in ids}}
    resize(routers, serve_decision(routers, metrics, t, settings), t, settings)
    batch = held / max(1, routers.ready) / peak.micro_batches  # tokens of one router's micro-batch
    per_group = m.num_experts / len(groups)
    work = []
    for g, pool in enumerate(groups):
        calls = routers.ready / max(1, pool.ready)
        ids = [f"g{g}-{j}" for j in range(max(1, pool.ready))]
        rows_per_call = batch * m.top_k * shares[g]
        if peak.coalesce_calls:  # one merged pass per layer and micro-batch
            per_layer = experts_s(m, hw, rows_per_call * calls, per_group, peak.gpus_per_group_replica)
        else:
            per_layer = calls * experts_s(m, hw, rows_per_call, per_group, peak.gpus_per_group_replica)
        busy = min(1.0, per_layer * peak.micro_batches * m.num_moe_layers / step) if step else 0.0
        if settings.group_signal == "rows":
            # a replica's rows/s at peak, at the plan's shares (`shares` are the traffic's now)
            planned = group_shares(len(groups), peak.imbalance)[g]
            at_peak = decode_step(m, hw, peak).tokens_per_s * m.top_k * planned / peak.group_replicas
            busy = made / tick * m.top_k * shares[g] / len(ids) / at_peak
        rows = made / tick * m.top_k * shares[g] / len(ids)
        metrics = {"busy": {r: busy for r in ids}, "rows_per_s": {r: rows for r in ids}}
        if floors is not None:  # every replica reports the router's floor for its group (policy.load_of)
            metrics["floor_rows_per_s"] = {r: float(floors[g]) for r in ids}
        work.append(busy * len(ids))
        resize(pool, serve_decision(pool, metrics, t, settings), t, settings)
    return work


def resize(pool: Pool, target: int, t: float, settings: ScalingSettings) -> None:
    while pool.target < target:
        pool.starting.append(t + settings.replica_start_s)
    while pool.target > target and pool.starting:
        pool.starting.pop()
    pool.ready = min(pool.ready, target) if pool.target > target else pool.ready
