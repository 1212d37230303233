"""Affinity-blind placement strategies, the baselines: contiguous, round-robin and DeepSeek's EPLB.

Every strategy is a pure function returning a `Placement`; the affinity-aware one is in
affinity_placement.py. Layers are passed as ids (`range(L)` when they are 0..L-1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from switchyard.router.affinity.eplb import rebalance_experts
from switchyard.router.affinity.placement import Placement, placement_from_groups


def _check_divides(num_experts: int, num_groups: int) -> None:
    if num_groups < 1 or num_experts % num_groups:
        raise ValueError(f"num_groups={num_groups} must divide num_experts={num_experts}")


def contiguous(layers: Sequence[int], num_experts: int, num_groups: int) -> Placement:
    """Group g holds experts [g*E/G, (g+1)*E/G) at every layer: what plain expert parallelism does."""
    _check_divides(num_experts, num_groups)
    group_of_expert = np.arange(num_experts) // (num_experts // num_groups)  # [E]
    return placement_from_groups("contiguous", layers, np.tile(group_of_expert, (len(layers), 1)))


def round_robin(layers: Sequence[int], num_experts: int, num_groups: int) -> Placement:
    """Expert e goes to group e mod G at every layer."""
    _check_divides(num_experts, num_groups)
    return placement_from_groups("round_robin", layers, np.tile(np.arange(num_experts) % num_groups, (len(layers), 1)))


@dataclass(frozen=True)
class EplbHierarchy:
    """EPLB's hierarchical policy: groups are GPUs spread over nodes; the model's experts come in
    `num_expert_groups` contiguous blocks (group-limited routing) that are kept on one node each."""

    num_nodes: int
    num_expert_groups: int


def eplb(
    popularity: np.ndarray,  # [L, E], expected load per expert (any scale)
    layers: Sequence[int],
    num_groups: int,
    replica_slots: int = 0,
    hierarchy: EplbHierarchy | None = None,
) -> Placement:
    """DeepSeek EPLB with each placement group as one EPLB "GPU".

    replica_slots = extra physical experts per layer; (E + replica_slots) must be a multiple of
    num_groups. EPLB may put two replicas of one expert on the same GPU; such a slot is wasted and
    the placement holds the expert there once.
    """
    num_layers, num_experts = popularity.shape
    num_physical = num_experts + replica_slots
    if num_physical % num_groups:
        raise ValueError(f"num_experts + replica_slots = {num_physical} must be a multiple of num_groups={num_groups}")
    if hierarchy is None:
        result = rebalance_experts(popularity, num_physical, 1, 1, num_groups)
        strategy = "eplb"
    else:
        result = rebalance_experts(popularity, num_physical, hierarchy.num_expert_groups, hierarchy.num_nodes, num_groups)
        strategy = "eplb-hierarchical"
    group_of_slot = np.arange(num_physical) // (num_physical // num_groups)  # [P], GPU-major slots
    holds = np.zeros((num_layers, num_groups, num_experts), dtype=bool)
    holds[np.arange(num_layers)[:, None], group_of_slot[None, :], result.phy2log] = True
    return Placement(strategy, tuple(int(layer) for layer in layers), holds)
