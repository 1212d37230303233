"""Split one layer's experts into equal-size groups that keep co-activated experts together.

Objective: maximise the co-activation mass inside groups, sum over groups of sum_{i<j in g} C[i, j].
By inclusion-exclusion, P(token visits g) ~ sum_{i in g} p[i] - sum_{i<j in g} C[i, j]; the first term
sums to top_k over all groups whatever the split, so more inside-group pair mass = lower expected fan-out.

Constraints: every group holds E/G experts (equal memory) and expected load, the summed popularity,
stays within (1 + balance_tolerance) x the mean; swaps that lower the heavier group's load are always
allowed, so a start that is out of balance is repaired, never made worse.

Method: start from EPLB's balanced packing (heaviest expert to the lightest group), then pairwise
swaps (Kernighan-Lin style). Each round scores every swap at once ([E, E] gains), then applies the
best swaps whose group pairs are disjoint: their gains do not interact, so many apply per round.
"""

from __future__ import annotations

import numpy as np

from switchyard.router.affinity.eplb import balanced_packing

_MIN_GAIN = 1e-12


def inside_mass(coactivation: np.ndarray, group_of_expert: np.ndarray) -> float:
    """sum over groups of sum_{i<j in g} C[i, j]; coactivation [E, E], group_of_expert [E]."""
    same = group_of_expert[:, None] == group_of_expert[None, :]
    return float((np.triu(coactivation, 1) * same).sum())


def partition_layer(
    coactivation: np.ndarray,  # [E, E]
    popularity: np.ndarray,  # [E]
    num_groups: int,
    balance_tolerance: float = 0.05,
    max_rounds: int = 1000,
) -> np.ndarray:
    """group_of_expert [E], values 0..G-1, each group of size E/G."""
    num_experts = len(popularity)
    if num_experts % num_groups:
        raise ValueError(f"num_groups={num_groups} must divide num_experts={num_experts}")
    group = balanced_packing(popularity[None, :], num_groups)[0][0]  # [E]
    pair = coactivation.astype(np.float64, copy=True)
    np.fill_diagonal(pair, 0.0)
    load = np.bincount(group, weights=popularity, minlength=num_groups)  # [G]
    limit = (1.0 + balance_tolerance) * popularity.sum() / num_groups
    to_group = pair @ np.eye(num_groups)[group]  # [E, G]: affinity of expert e to each group's members
    load_delta = popularity[None, :] - popularity[:, None]  # [a, b]: load change of a's group if a<->b
    for _ in range(max_rounds):
        own = to_group[np.arange(num_experts), group]  # [E]
        half = to_group[:, group] - own[:, None]  # [a, b]: a's gain from moving into b's group
        # to_group counts b as a member of b's group, but b leaves it as a arrives (and vice versa).
        gain = half + half.T - 2.0 * pair
        load_a = load[group][:, None] + load_delta  # [a, b] a's group after the swap
        load_b = load[group][None, :] - load_delta
        new_max = np.maximum(load_a, load_b)
        balanced = (new_max <= limit) | (new_max <= np.maximum(load[group][:, None], load[group][None, :]))
        useful = np.triu(balanced & (group[:, None] != group[None, :]) & (gain > _MIN_GAIN), 1)
        a_index, b_index = np.nonzero(useful)
        if len(a_index) == 0:
            break
        touched = np.zeros(num_groups, dtype=bool)
        for at in np.argsort(-gain[a_index, b_index], kind="stable"):
            a, b = a_index[at], b_index[at]
            ga, gb = group[a], group[b]
            if touched[ga] or touched[gb]:
                continue
            touched[ga] = touched[gb] = True
            group[a], group[b] = gb, ga
            load[ga] += popularity[b] - popularity[a]
            load[gb] += popularity[a] - popularity[b]
            moved = pair[:, b] - pair[:, a]
            to_group[:, ga] += moved
            to_group[:, gb] -= moved
            if touched.all():
                break
    return group
