"""The affinity-aware placement: few groups per token, balanced load, aligned across layers.

Per layer, from the fitted AffinityMatrix:
1. partition.py: equal-size groups (E/G experts) maximising co-activation inside groups, with
   expected load within balance_tolerance of the mean;
2. replicas.py: replica_slots / G extra experts per group: copies of the experts with the most load
   per copy (EPLB's rule), each in the group its co-picks most likely visit already;
then across layers:
3. alignment.py: relabel each layer's groups to continue the previous layer's (transition matrix), so
   a token tends to stay on the same group ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from switchyard.router.affinity.alignment import align_group_labels
from switchyard.router.affinity.matrix import AffinityMatrix
from switchyard.router.affinity.partition import partition_layer
from switchyard.router.affinity.placement import Placement, placement_from_groups
from switchyard.router.affinity.replicas import add_replicas


@dataclass(frozen=True)
class AffinityOptions:
    # Expected-load slack of the partition. Tighter costs fan-out; on held-out traces imbalance is
    # dominated by the traffic shifting anyway (flame-moe: ~1.10 whatever the placement).
    balance_tolerance: float = 0.05
    align_layers: bool = True

    def __post_init__(self) -> None:
        if self.balance_tolerance < 0:
            raise ValueError(f"AffinityOptions.balance_tolerance must be >= 0, got {self.balance_tolerance}")


def affinity_placement(
    matrix: AffinityMatrix,
    num_groups: int,
    replica_slots: int = 0,
    options: AffinityOptions = AffinityOptions(),
    partition_pairs: np.ndarray | None = None,
) -> Placement:
    """Placement of matrix.layers over num_groups groups; replica_slots = extra experts per layer in
    total, a multiple of num_groups so every group gets the same memory. `partition_pairs` [L, E, E]
    replaces the co-activation the partition keeps together (robust.py passes a shift-penalised one)."""
    num_experts = matrix.num_experts
    if num_groups < 1 or num_experts % num_groups:
        raise ValueError(f"num_groups={num_groups} must divide num_experts={num_experts}")
    if replica_slots < 0 or replica_slots % num_groups:
        raise ValueError(f"replica_slots={replica_slots} must be a non-negative multiple of num_groups={num_groups}")
    pairs = matrix.coactivation if partition_pairs is None else partition_pairs
    if pairs.shape != matrix.coactivation.shape:
        raise ValueError(f"partition_pairs: shape {pairs.shape}, expected {matrix.coactivation.shape}")
    group_of_expert = np.stack(
        [
            partition_layer(pairs[l], matrix.popularity[l], num_groups, options.balance_tolerance)
            for l in range(matrix.num_layers)
        ]
    )  # [L, E]
    holds = placement_from_groups("affinity", matrix.layers, group_of_expert).holds  # [L, G, E]
    if replica_slots:
        holds = np.stack(
            [
                add_replicas(holds[l], matrix.coactivation[l], matrix.popularity[l], replica_slots // num_groups)
                for l in range(matrix.num_layers)
            ]
        )
    if options.align_layers:
        holds = align_group_labels(holds, matrix.popularity, matrix.transition, matrix.top_k)
    return Placement("affinity", tuple(int(layer) for layer in matrix.layers), holds)
