"""Spend one layer's replica slots where the dispatch rule turns them into fewer groups per token.

A token that picks expert e is sent to one of e's holders S_e; the rule (dispatch.py) prefers a holder
the token already visits for its other experts. So e costs the token an extra group only when none of
its holders is visited by the token's other picks. From pairwise statistics, treating the other picks
as independent given e:

    visit(e, g) = 1 - prod_{j in g, j != e} (1 - P(j | e)),    P(j | e) = C[e, j] / p[e]
    miss(e, S)  = prod_{s in S} (1 - visit(e, s))
    saved(e, g) = p[e] * miss(e, S_e) * visit(e, g)    # groups saved per token by adding e to g

Only a token whose replica choice is open (no holder visited, or two or more) is steered to the least
loaded replica; one visiting exactly one holder is bound to it. The score adds the gain in such
"steerable" picks, times steer_weight, since that is what lets dispatch absorb load that shifts away
from the fitted statistics. Slots are filled greedily by score, each group getting the same number of
extra slots (equal memory). A replica pulls up to p[e] * visit(e, g) of load into g; one that could
push g above the modelled peak (`expected_group_load`) is not taken, and a slot nothing fits stays empty.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def miss_log_table(coactivation: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """[E, E] log P(j not picked | e picked), 0 on the diagonal (e does not hide itself)."""
    conditional = coactivation / np.maximum(popularity[:, None], _EPS)
    np.fill_diagonal(conditional, 0.0)
    return np.log1p(-np.clip(conditional, 0.0, 1.0 - 1e-9))


def _water_fill_mass(load: np.ndarray, mass: float) -> np.ndarray:
    """Continuous water filling: how `mass` spread onto the lowest of `load [r]` lands, [r]."""
    level_load = np.sort(load)
    cumulative = np.cumsum(level_load)
    cost_to_level = level_load * np.arange(1, len(load) + 1) - cumulative  # [r]
    filled = int((cost_to_level <= mass).sum())
    level = (mass + cumulative[filled - 1]) / filled
    return np.maximum(level - load, 0.0)


def expected_group_load(
    holds: np.ndarray,  # [G, E] bool
    popularity: np.ndarray,  # [E]
    group_miss_log: np.ndarray,  # [E, G] = miss_log @ holds.T: log P(no other pick in g | e)
) -> np.ndarray:
    """Expected (token, expert) assignments per token, per group [G], under the dispatch rule."""
    count = holds.sum(0)  # [E]
    single, replicated = count == 1, np.flatnonzero(count > 1)
    load = holds[:, single].astype(np.float64) @ popularity[single]  # [G], single holders are forced
    if len(replicated) == 0:
        return load
    visited = (1.0 - np.exp(group_miss_log[replicated])) * holds[:, replicated].T  # [R, G] visit, 0 off holders
    none_visited = np.exp((group_miss_log[replicated] * holds[:, replicated].T).sum(1))  # [R]
    bound = popularity[replicated] * (1.0 - none_visited)  # [R]
    # A token visiting several holders picks one of them; split its bound share by visit odds.
    load += (bound[:, None] * visited / np.maximum(visited.sum(1, keepdims=True), _EPS)).sum(0)
    free = popularity[replicated] * none_visited  # [R], goes to the least loaded holder
    for r in np.argsort(-free, kind="stable"):
        holders = np.flatnonzero(holds[:, replicated[r]])
        load[holders] += _water_fill_mass(load[holders], free[r])
    return load


def add_replicas(
    holds: np.ndarray,  # [G, E] bool, every expert held once
    coactivation: np.ndarray,  # [E, E]
    popularity: np.ndarray,  # [E]
    slots_per_group: int,
    balance_tolerance: float = 0.0,
    steer_weight: float = 0.0,
) -> np.ndarray:
    """holds [G, E] with up to `slots_per_group` more experts in every group (see the module docstring);
    the load bound is max(modelled peak, (1 + balance_tolerance) x mean)."""
    holds = holds.copy()
    num_groups = holds.shape[0]
    miss_log = miss_log_table(coactivation, popularity)
    group_miss_log = miss_log @ holds.T.astype(np.float64)  # [E, G]
    extra = np.zeros(num_groups, np.int64)
    limit = (1.0 + balance_tolerance) * popularity.sum() / num_groups
    for _ in range(slots_per_group * num_groups):
        load = expected_group_load(holds, popularity, group_miss_log)  # [G]
        held_miss = np.exp((group_miss_log * holds.T).sum(1))  # [E] miss(e, S_e)
        visit = 1.0 - np.exp(group_miss_log)  # [E, G] P(g visited by other picks | e)
        saved = popularity[:, None] * held_miss[:, None] * visit  # [E, G]
        held_visit = np.where(holds.T, visit, 0.0)
        bound_now = held_miss * (held_visit / np.maximum(1.0 - held_visit, _EPS)).sum(1)  # [E] P(one visited)
        bound_after = bound_now[:, None] * (1.0 - visit) + held_miss[:, None] * visit  # [E, G]
        score = saved + steer_weight * popularity[:, None] * (bound_now[:, None] - bound_after)
        inflow = popularity[:, None] * visit  # [E, G] upper bound of the load a replica pulls into g
        too_heavy = load[None, :] + inflow > max(limit, load.max()) + _EPS
        score[holds.T | (extra >= slots_per_group)[None, :] | too_heavy] = -np.inf
        e, g = divmod(int(np.argmax(score)), num_groups)
        if not np.isfinite(score[e, g]):
            break
        holds[g, e] = True
        extra[g] += 1
        group_miss_log[:, g] += miss_log[:, e]
    return holds
