"""Replica choice: which group serves each (token, expert) at one layer. Runs in the router every layer.

Rule, per token:
1. an expert held by one group goes there; those groups are the token's "already used" groups;
2. a replicated expert goes to a group the token already uses (the least loaded such group), which
   costs no extra message;
3. otherwise to the least loaded replica, counting what this call has assigned so far; its group then
   counts as used for the token's remaining replicated experts.

Step 3 is done one replicated expert at a time (most waiting tokens first), water-filling that
expert's tokens over its replicas: the loads a one-token-at-a-time loop over those tokens would reach,
without a Python loop over tokens. Steps 2-3 repeat until every pair is placed, so a group opened in
step 3 is "already used" for the token's other replicated experts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from switchyard.router.affinity.placement import Placement


@dataclass(frozen=True)
class DispatchTables:
    """Per-layer lookup tables built once from a Placement."""

    layers: tuple[int, ...]  # [L] MoE layer ids
    num_groups: int
    replica_groups: torch.Tensor  # [L, E, R] int64: groups holding each expert, ascending, -1 padded
    replica_count: torch.Tensor  # [L, E] int64: groups holding each expert (>= 1)

    @staticmethod
    def from_placement(placement: Placement) -> "DispatchTables":
        holds = torch.from_numpy(placement.holds).permute(0, 2, 1)  # [L, E, G]
        count = holds.sum(-1)  # [L, E]
        max_replicas = int(count.max())
        # Sorting "held" first (stable) lists the holding groups in ascending order.
        order = torch.argsort((~holds).to(torch.int8), dim=-1, stable=True)[..., :max_replicas]
        groups = torch.where(torch.arange(max_replicas) < count[..., None], order, -1)
        return DispatchTables(placement.layers, placement.num_groups, groups, count)

    def layer_index(self, layer: int) -> int:
        return self.layers.index(layer)


def water_fill(load: torch.Tensor, items: int) -> torch.Tensor:
    """Counts [r] that `items` unit assignments, each to the currently least loaded of r bins, end with.

    load [r] (float or int) -> int64 [r] summing to `items`.
    """
    sorted_load, order = torch.sort(load.double())
    cumulative = torch.cumsum(sorted_load, 0)
    ranks = torch.arange(1, len(load) + 1, dtype=torch.float64)
    cost_to_level = sorted_load * ranks - cumulative  # [r] items to raise the m lowest bins to bin m's load
    filled = int((cost_to_level <= items).sum())  # bins that receive items
    level = (items + cumulative[filled - 1]) / filled
    base = torch.clamp(torch.floor(level - sorted_load[:filled]), min=0).long()
    extra = items - int(base.sum())
    # The leftover units go to the bins that end lowest, as the one-at-a-time loop would.
    base[torch.argsort(sorted_load[:filled] + base, stable=True)[:extra]] += 1
    counts = torch.zeros(len(load), dtype=torch.int64)
    counts[order[:filled]] = base
    return counts


def assign_replicas(
    expert_ids: torch.Tensor,  # [T, k] int
    layer: int,
    tables: DispatchTables,
    group_load: torch.Tensor,  # [G], updated in place with this call's assignments
) -> torch.Tensor:
    """Group of every (token, expert) pair, [T, k] int64. `group_load` is updated in place so a router
    can carry it across the micro-batches of a step (start from zeros per layer and step)."""
    l = tables.layer_index(layer)
    num_tokens, k = expert_ids.shape
    experts = expert_ids.reshape(-1).long()  # [T*k] items
    token = torch.arange(num_tokens).repeat_interleave(k)  # [T*k]
    candidates = tables.replica_groups[l][experts]  # [T*k, R]
    count = tables.replica_count[l][experts]  # [T*k]
    groups = torch.where(count == 1, candidates[:, 0], -1)  # [T*k]

    def assign(items: torch.Tensor, chosen: torch.Tensor) -> None:
        groups[items] = chosen
        used[token[items], chosen] = True
        group_load.add_(torch.bincount(chosen, minlength=tables.num_groups).to(group_load.dtype))

    used = torch.zeros(num_tokens, tables.num_groups, dtype=torch.bool)  # [T, G]
    assign(torch.nonzero(count == 1).squeeze(1), groups[count == 1])
    safe = candidates.clamp(min=0)
    while True:
        pending = groups < 0
        if not bool(pending.any()):
            break
        on_used = used[token[:, None], safe] & (candidates >= 0) & pending[:, None]  # [T*k, R]
        hit = torch.nonzero(on_used.any(1)).squeeze(1)
        if len(hit):
            load = torch.where(on_used[hit], group_load[safe[hit]].double(), torch.inf)
            assign(hit, safe[hit].gather(1, load.argmin(1, keepdim=True)).squeeze(1))
            continue
        # Free choice: the replicated expert with the most waiting items first, like EPLB's packing.
        waiting = experts[pending]
        expert = int(torch.bincount(waiting).argmax())
        items = torch.nonzero(pending & (experts == expert)).squeeze(1)
        replicas = tables.replica_groups[l, expert][: int(tables.replica_count[l, expert])]
        per_replica = water_fill(group_load[replicas], len(items))
        assign(items, torch.repeat_interleave(replicas, per_replica))
    return groups.reshape(num_tokens, k)
