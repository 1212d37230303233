"""Re-placement from recent routing: the rolling affinity fit a router runs while it serves.

The router keeps its recent routing in a bounded window (router/trace_recorder.py, `RoutingWindow`). From
those rows, `propose`:
1. splits the window's sequences in two (even / odd), fits each candidate strategy on one half and scores it,
   with the router's own dispatch rule (metrics.evaluate_placement), on the other half, next to the current
   placement on the same rows: a held-out prediction, not the fit scoring itself;
2. picks the candidate with the lowest predicted fan-out whose predicted imbalance is no worse than the worse
   of the current placement's and EPLB's (EPLB qualifies by definition, so there is always a proposal);
3. refits the picked strategy on the whole window, with the current placement's replica slots, and relabels
   its groups layer by layer to keep as many experts where they are as possible (group labels are free:
   relabelling changes neither fan-out nor balance, only how many experts must move).

Candidates: EPLB, the affinity partition and the shift-robust one (robust.py; needs 8+ sequences). The gain is
the relative drop of the busiest group's load per token, fan-out x imbalance / groups: a layer's step waits for
its busiest group, so a placement that only evens the load out gains as surely as one that sends fewer
messages (1 - proposed / current; `worth_applying` checks it against the operator's threshold). Everything here is pure: arrays in, placements and numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from switchyard.router.affinity.affinity_placement import affinity_placement
from switchyard.router.affinity.alignment import linear_assignment
from switchyard.router.affinity.aligned import AlignedRouting
from switchyard.router.affinity.dispatch import DispatchTables, assign_replicas
from switchyard.router.affinity.matrix import fit_affinity
from switchyard.router.affinity.metrics import evaluate_placement, groups_used
from switchyard.router.affinity.placement import Placement
from switchyard.router.affinity.robust import robust_affinity_placement
from switchyard.router.affinity.strategies import eplb
from switchyard.router.affinity.traces import RoutingTrace

STRATEGIES = ("eplb", "affinity", "affinity-robust")
MIN_SEQUENCES_ROBUST = 8  # robust.py splits its fit rows in two again and needs 4 sequences in each half


@dataclass(frozen=True)
class PlacementScore:
    fan_out: float  # mean groups per token per MoE layer
    imbalance: float  # mean over layers of max / mean group load

    @property
    def busiest_load(self) -> float:
        """Rows the busiest group gets per token, times the number of groups: fan-out x imbalance (the mean
        group gets fan-out / groups of a token's rows, the busiest `imbalance` times that)."""
        return self.fan_out * self.imbalance

    def to_dict(self) -> dict:
        return {"fan_out": round(self.fan_out, 4), "imbalance": round(self.imbalance, 4)}


@dataclass(frozen=True)
class Proposal:
    placement: Placement  # fitted on the whole window, labels matched to the current placement
    current: PlacementScore  # the current placement on the scored rows
    proposed: PlacementScore  # the proposal's strategy on the same rows (held out from its fit where split)
    candidates: dict[str, PlacementScore]  # every strategy tried, scored like `proposed`
    scored_tokens: int
    held_out: bool  # True: scored on sequences the scored placements were not fitted on
    experts_moved: int  # (layer, expert) copies some group must load

    @property
    def gain(self) -> float:
        return relative_gain(self.current, self.proposed)


def relative_gain(current: PlacementScore, proposed: PlacementScore) -> float:
    """1 - proposed / current busiest-group load: 0.1 = the busiest group gets a tenth fewer rows a token."""
    return 1.0 - proposed.busiest_load / current.busiest_load


def worth_applying(current: PlacementScore, proposed: PlacementScore, min_gain: float | None) -> tuple[bool, str]:
    """(apply?, why). `min_gain` None: the operator applies whatever the numbers say."""
    if min_gain is None:
        return True, "min_gain null: applied whatever the gain"
    gain = relative_gain(current, proposed)
    if gain < min_gain:
        return False, f"gain {gain:.4f} is below min_gain {min_gain:g}"
    return True, f"gain {gain:.4f} >= min_gain {min_gain:g}"


def score(placement: Placement, routing: AlignedRouting, batch_tokens: int = 256) -> PlacementScore:
    report = evaluate_placement(placement, routing, hidden_size=1, batch_tokens=batch_tokens)
    return PlacementScore(report.mean_fan_out, report.mean_imbalance)


def replayed_fan_out(calls: list[tuple[int, np.ndarray]], placement: Placement) -> float | None:
    """Fan-out of `placement` dispatching these layer calls ((layer, expert ids [T, k]) each) one by one, with
    the router's rule and its group loads starting from zero per call: what the router records for the same
    calls, replicas included (evaluate_placement batches tokens its own way, so with replicas it differs)."""
    tables = DispatchTables.from_placement(placement)
    messages = tokens = 0
    for layer, ids in calls:
        if not len(ids):
            continue
        load = torch.zeros(tables.num_groups, dtype=torch.float64)
        groups = assign_replicas(torch.from_numpy(np.asarray(ids, dtype=np.int64)), layer, tables, load)
        messages += int(groups_used(groups.numpy(), tables.num_groups).sum())
        tokens += len(ids)
    return messages / tokens if tokens else None


def replica_slots_of(placement: Placement) -> int:
    """Replica slots per layer the groups' memory has room for: the fullest group's slots times the groups, less
    the experts (EPLB may leave a slot unused; the memory is there all the same), at the tightest layer."""
    extra = placement.slots_per_group().max(1) * placement.num_groups - placement.num_experts  # [L]
    slots = int(extra.min())
    return slots - slots % placement.num_groups


def fit_strategy(strategy: str, trace: RoutingTrace, num_groups: int, replica_slots: int) -> Placement:
    matrix = fit_affinity(trace)
    if strategy == "eplb":
        return eplb(matrix.popularity, [int(x) for x in matrix.layers], num_groups, replica_slots)
    if strategy == "affinity":
        return affinity_placement(matrix, num_groups, replica_slots)
    if strategy == "affinity-robust":
        return robust_affinity_placement(trace, num_groups, replica_slots)
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")


def match_labels(current: Placement, proposed: Placement) -> Placement:
    """`proposed` with each layer's groups renumbered to overlap `current`'s most (fewest experts to move)."""
    holds = proposed.holds.copy()
    for l in range(proposed.num_layers):
        overlap = current.holds[l].astype(np.int64) @ proposed.holds[l].T.astype(np.int64)  # [G cur, G new]
        label_of_new = linear_assignment(-overlap.T)  # new group b takes label label_of_new[b]
        holds[l][label_of_new] = proposed.holds[l]
    return Placement(proposed.strategy, proposed.layers, holds)


def experts_to_load(current: Placement, new: Placement) -> int:
    """(layer, group, expert) copies the new placement has and the current does not."""
    return int((new.holds & ~current.holds).sum())


def check_compatible(current: Placement, new: Placement) -> None:
    """Raises ValueError naming the field where `new` cannot replace `current` in a running app."""
    if new.num_groups != current.num_groups:
        raise ValueError(f"num_groups: the app runs {current.num_groups} expert groups, the placement has "
                         f"{new.num_groups}")
    if new.num_experts != current.num_experts:
        raise ValueError(f"num_experts: the model has {current.num_experts} experts, the placement {new.num_experts}")
    if tuple(new.layers) != tuple(current.layers):
        raise ValueError(f"layers: the model's MoE layers are {list(current.layers)}, the placement's "
                         f"{list(new.layers)}")


def _halves(trace: RoutingTrace) -> tuple[RoutingTrace, RoutingTrace] | None:
    sequences = np.unique(trace.seq_id)
    if len(sequences) < 2:
        return None
    even = np.isin(trace.seq_id, sequences[::2])
    return trace.select(even), trace.select(~even)


def propose(trace: RoutingTrace, current: Placement, strategies: tuple[str, ...] = STRATEGIES,
            batch_tokens: int = 256) -> Proposal:
    """The best placement for the routing in `trace` (the module docstring says how), against `current`."""
    if trace.num_rows == 0:
        raise ValueError("no routing rows to fit on")
    slots = replica_slots_of(current)
    usable = [s for s in strategies
              if s != "affinity-robust" or len(np.unique(trace.seq_id)) >= MIN_SEQUENCES_ROBUST]
    halves = _halves(trace)
    fit_rows, scored_rows = halves if halves is not None else (trace, trace)
    routing = scored_rows.aligned()
    candidates = {s: score(fit_strategy(s, fit_rows, current.num_groups, slots), routing, batch_tokens)
                  for s in usable}
    now = score(current, routing, batch_tokens)
    limit = max(now.imbalance, candidates["eplb"].imbalance if "eplb" in candidates else np.inf) * (1 + 1e-9)
    allowed = {s: c for s, c in candidates.items() if c.imbalance <= limit} or candidates
    best = min(allowed, key=lambda s: allowed[s].fan_out)
    placement = match_labels(current, fit_strategy(best, trace, current.num_groups, slots))
    return Proposal(placement, now, candidates[best], candidates, routing.num_tokens, halves is not None,
                    experts_to_load(current, placement))


def compare(trace: RoutingTrace, current: Placement, new: Placement, batch_tokens: int = 256) -> Proposal:
    """An operator's placement `new` against `current`, both scored on the whole of `trace`."""
    check_compatible(current, new)
    routing = trace.aligned()
    proposed = score(new, routing, batch_tokens)
    return Proposal(new, score(current, routing, batch_tokens), proposed, {new.strategy: proposed},
                    routing.num_tokens, False, experts_to_load(current, new))
