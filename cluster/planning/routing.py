"""How tokens spread over expert groups: fan-out (groups a token visits per layer) and imbalance (busiest group's
load over the mean), for a number of groups and a placement.

Two sources:
- `TraceRouting`: measured on real routing traces (router/affinity/traces.py) with the placements of
  `switchyard place` (cluster/cli/place.py: fitted on half the sequences, scored with metrics.py on the
  other half): `affinity` (Switchyard's) and `eplb` (DeepSeek's, what a plain expert-parallel deployment uses).
  The traces come from some model; their fan-out carries to another model with as many groups only as an
  approximation, which the report names.
- `SkewRouting`: a stated skew. Expert popularity is Zipf(skew) over the model's experts, experts go to groups
  round robin by rank (as EPLB's greedy packing would), and a token's k picks are independent draws:
      fan_out = sum_g 1 - (1 - share_g)^k,   imbalance = max_g share_g x G.
  skew 0 is uniform routing (imbalance 1).
Both also give each group's share of the load (`shares`), from which `pools.py` picks the groups that a cheaper
node type can serve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

PLACEMENTS = ("affinity", "eplb")


@dataclass(frozen=True)
class GroupRouting:
    fan_out: float
    imbalance: float
    source: str


def skew_shares(num_experts: int, num_groups: int, skew: float) -> np.ndarray:
    """Per-group share of (token, expert) pairs under Zipf(skew) popularity, experts dealt round robin by rank."""
    if skew < 0:
        raise ValueError(f"skew must be >= 0, got {skew}")
    ranks = np.arange(1, num_experts + 1, dtype=np.float64)
    popularity = ranks ** -skew
    popularity /= popularity.sum()
    shares = np.zeros(num_groups)
    np.add.at(shares, np.arange(num_experts) % num_groups, popularity)
    return shares


def skew_routing(num_experts: int, top_k: int, num_groups: int, skew: float) -> GroupRouting:
    shares = skew_shares(num_experts, num_groups, skew)
    # a token's k picks: expected (token, expert) pairs per group is k x share; fan-out counts distinct groups
    fan_out = float(np.sum(1.0 - (1.0 - shares) ** top_k))
    return GroupRouting(min(fan_out, float(min(top_k, num_groups))), float(shares.max() * num_groups),
                        f"stated skew {skew:g} (Zipf)")


@dataclass
class TraceRouting:
    """Fan-out, imbalance and per-group load per (groups, placement), measured on traces once per number of
    groups."""

    path: str
    _cache: dict = field(default_factory=dict)

    def _measured(self, num_groups: int, placement: str) -> tuple[float, float, np.ndarray]:
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        if num_groups not in self._cache:
            self._cache[num_groups] = _measure(self.path, num_groups)
        return self._cache[num_groups][placement]

    def routing(self, num_groups: int, placement: str) -> GroupRouting:
        if num_groups == 1:
            return GroupRouting(1.0, 1.0, f"{self.path}: one group")
        fan_out, imbalance, _ = self._measured(num_groups, placement)
        return GroupRouting(fan_out, imbalance, f"{self.path}, {placement} placement, measured")

    def shares(self, num_groups: int, placement: str) -> np.ndarray:
        """[layers, groups]: each trace layer's (token, expert) pairs per group, a row summing to 1. Kept per
        layer: group g holds other experts in every layer, and a layer's step waits for that layer's busiest."""
        if num_groups == 1:
            return np.ones((1, 1))
        return self._measured(num_groups, placement)[2]


@lru_cache(maxsize=4)
def _split(path: str):
    from switchyard.cluster.cli.affinity import split_trace
    from switchyard.router.affinity.traces import read_traces

    return split_trace(read_traces([path]), None, None)


def _measure(path: str, num_groups: int) -> dict[str, tuple[float, float, np.ndarray]]:
    """The placements `switchyard place` compares (fitted on the first half of the sequences), scored with the
    router's own dispatch on the other half: fan-out, imbalance and the group loads per layer."""
    from switchyard.router.affinity.affinity_placement import affinity_placement
    from switchyard.router.affinity.matrix import fit_affinity
    from switchyard.router.affinity.metrics import evaluate_placement
    from switchyard.router.affinity.strategies import eplb

    split = _split(path)
    experts = split.fit.metadata.num_experts
    if experts % num_groups:
        raise ValueError(f"{num_groups} groups do not divide the traces' {experts} experts")
    matrix = fit_affinity(split.fit)
    layers = [int(layer) for layer in matrix.layers]
    placements = {"affinity": affinity_placement(matrix, num_groups, 0),
                  "eplb": eplb(matrix.popularity, layers, num_groups, 0)}
    routing = split.evaluate.aligned()
    out = {}
    for name, placement in placements.items():
        report = evaluate_placement(placement, routing, hidden_size=1, bytes_per_element=1)
        load = report.group_load
        out[name] = (report.mean_fan_out, report.mean_imbalance, load / load.sum(axis=1, keepdims=True))
    return out


def trace_experts(path: str) -> int:
    return int(_split(path).fit.metadata.num_experts)


@dataclass
class RoutingSource:
    """Where the planner reads routing from, per number of groups: the traces where that number divides their
    experts, else the stated skew over the model's own experts."""

    num_experts: int
    top_k: int
    skew: float = 0.0
    traces: TraceRouting | None = None

    def _traced(self, num_groups: int) -> bool:
        if self.traces is None:
            return False
        experts = trace_experts(self.traces.path)
        return num_groups <= experts and experts % num_groups == 0

    def routing(self, num_groups: int, placement: str) -> GroupRouting:
        if self._traced(num_groups):
            return self.traces.routing(num_groups, placement)
        return skew_routing(self.num_experts, self.top_k, num_groups, self.skew)

    def shares(self, num_groups: int, placement: str) -> tuple[np.ndarray, str]:
        """[layers, groups] load shares (one layer for a stated skew), and where they come from."""
        if self._traced(num_groups):
            return self.traces.shares(num_groups, placement), f"{self.traces.path}, {placement} placement, measured"
        return skew_shares(self.num_experts, num_groups, self.skew)[None, :], f"stated skew {self.skew:g} (Zipf)"
