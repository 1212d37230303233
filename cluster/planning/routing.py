"""How tokens spread over expert groups: fan-out (groups a token visits per layer) and imbalance (busiest group's
load over the mean), for a number of groups and a placement.

Two sources:
- `TraceRouting`: measured on real routing traces (router/affinity/traces.py) with the placements of
  `switchyard place` (cluster/cli/affinity.py: fitted on half the sequences, scored with metrics.py on the
  other half): `affinity` (Switchyard's) and `eplb` (DeepSeek's, what a plain expert-parallel deployment uses).
  The traces come from some model; their fan-out carries to another model with as many groups only as an
  approximation, which the report names.
- `SkewRouting`: a stated skew. Expert popularity is Zipf(skew) over the model's experts, experts go to groups
  round robin by rank (as EPLB's greedy packing would), and a token's k picks are independent draws:
      fan_out = sum_g 1 - (1 - share_g)^k,   imbalance = max_g share_g x G.
  skew 0 is uniform routing (imbalance 1).
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


def skew_routing(num_experts: int, top_k: int, num_groups: int, skew: float) -> GroupRouting:
    if skew < 0:
        raise ValueError(f"skew must be >= 0, got {skew}")
    ranks = np.arange(1, num_experts + 1, dtype=np.float64)
    popularity = ranks ** -skew
    popularity /= popularity.sum()
    shares = np.zeros(num_groups)
    np.add.at(shares, np.arange(num_experts) % num_groups, popularity)
    # a token's k picks: expected (token, expert) pairs per group is k x share; fan-out counts distinct groups
    fan_out = float(np.sum(1.0 - (1.0 - shares) ** top_k))
    return GroupRouting(min(fan_out, float(min(top_k, num_groups))), float(shares.max() * num_groups),
                        f"stated skew {skew:g} (Zipf)")


@dataclass
class TraceRouting:
    """Fan-out and imbalance per (groups, placement), measured on traces once per number of groups."""

    path: str
    _cache: dict = field(default_factory=dict)

    def routing(self, num_groups: int, placement: str) -> GroupRouting:
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        if num_groups == 1:
            return GroupRouting(1.0, 1.0, f"{self.path}: one group")
        if num_groups not in self._cache:
            self._cache[num_groups] = _measure(self.path, num_groups)
        fan_out, imbalance = self._cache[num_groups][placement]
        return GroupRouting(fan_out, imbalance, f"{self.path}, {placement} placement, measured")


@lru_cache(maxsize=4)
def _split(path: str):
    from switchyard.cluster.cli.affinity import split_trace
    from switchyard.router.affinity.traces import read_traces

    return split_trace(read_traces([path]), None, None)


def _measure(path: str, num_groups: int) -> dict[str, tuple[float, float]]:
    from switchyard.cluster.cli.affinity import compare_strategies

    split = _split(path)
    experts = split.fit.metadata.num_experts
    if experts % num_groups:
        raise ValueError(f"{num_groups} groups do not divide the traces' {experts} experts")
    rows, _ = compare_strategies(split, num_groups, 0, hidden_size=1, bytes_per_element=1, num_nodes=1)
    return {r.strategy: (r.fan_out, r.imbalance) for r in rows if r.strategy in PLACEMENTS}


def trace_experts(path: str) -> int:
    return int(_split(path).fit.metadata.num_experts)
