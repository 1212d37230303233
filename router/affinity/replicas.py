"""Spend one layer's replica slots: which experts get a second copy, and which group holds it.

Which experts: EPLB's rule, the expert with the most expected load per copy (among those a group with
room lacks), one slot at a time. A
replica is the dispatcher's only way to move load between groups (dispatch.py sends a token's pick
of a replicated expert to the least loaded holder it is free to choose), so copies belong with the
load, and load is what moves when traffic shifts: an affinity-only choice (replicate where fan-out
gains most) measured worse than EPLB on balance on shifted traces (scripts/placement_shift_eval.py).

Which group: the one the expert's co-picks most likely already visit, so dispatch turns the copy into
a saved message as well. From pairwise statistics, treating the other picks as independent given e:

    visit(e, g) = 1 - prod_{j in g, j != e} (1 - P(j | e)),    P(j | e) = C[e, j] / p[e]

Each group gets the same number of extra slots (equal memory); ties go to the lighter group. Every
slot is used.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def miss_log_table(coactivation: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """[E, E] log P(j not picked | e picked), 0 on the diagonal (e does not hide itself)."""
    conditional = coactivation / np.maximum(popularity[:, None], _EPS)
    np.fill_diagonal(conditional, 0.0)
    return np.log1p(-np.clip(conditional, 0.0, 1.0 - 1e-9))


def add_replicas(
    holds: np.ndarray,  # [G, E] bool, every expert held once
    coactivation: np.ndarray,  # [E, E]
    popularity: np.ndarray,  # [E]
    slots_per_group: int,
) -> np.ndarray:
    """holds [G, E] with `slots_per_group` more experts in every group (see the module docstring)."""
    holds = holds.copy()
    num_groups, num_experts = holds.shape
    if slots_per_group == 0:
        return holds
    miss_log = miss_log_table(coactivation, popularity)
    group_miss_log = miss_log @ holds.T.astype(np.float64)  # [E, G] log P(no other pick in g | e)
    extra = np.zeros(num_groups, np.int64)
    load = holds.astype(np.float64) @ popularity  # [G], expected load if copies split their expert's load
    copies = holds.sum(0).astype(np.float64)  # [E]
    for _ in range(slots_per_group * num_groups):
        room = ~holds & (extra < slots_per_group)[:, None]  # [G, E] where a copy could go
        per_copy = np.where(room.any(0), popularity / copies, -np.inf)
        expert = int(np.argmax(per_copy))  # first index on ties, as EPLB
        if not np.isfinite(per_copy[expert]):
            break
        visit = 1.0 - np.exp(group_miss_log[expert])  # [G]
        group = int(np.argmax(np.where(room[:, expert], visit - _EPS * load, -np.inf)))  # lighter group on ties
        load[holds[:, expert]] -= popularity[expert] / (copies[expert] * (copies[expert] + 1))
        load[group] += popularity[expert] / (copies[expert] + 1)
        holds[group, expert] = True
        copies[expert] += 1
        extra[group] += 1
        group_miss_log[:, group] += miss_log[:, expert]
    return holds
