"""Replica choice: which group serves each (token, expert) at one layer. Runs in the router every layer.

Rule, per token:
1. an expert held by one group goes there; those groups are the token's "already used" groups;
2. a replicated expert goes to a group the token already uses (the least loaded such group), which
   costs no extra message;
3. otherwise to the least loaded replica, counting what this call has assigned so far; its group then
   counts as used for the token's remaining replicated experts.

Vectorised over tokens: step 3 takes every token's first unplaced replicated expert at once and
water-fills each expert's tokens over its replicas (the loads a one-token-at-a-time loop over them would
reach; experts placed in the same round see the loads from before the round). Steps 2-3 repeat, at most
k rounds, so a group opened in step 3 is "already used" for the token's other replicated experts.
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

    def to(self, device: torch.device | str) -> "DispatchTables":
        """The same tables on `device`, to dispatch where the gate's top-k already is."""
        return DispatchTables(self.layers, self.num_groups, self.replica_groups.to(device), self.replica_count.to(device))


def water_fill(load: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Per row, how `items` unit assignments, each to the currently least loaded bin, end up spread.

    load [n, R] float with +inf where a row has fewer bins; items [n] int64 -> counts [n, R] int64,
    each row summing to its items. Closed form (fill the lowest bins to a common level), no loop.
    """
    sorted_load, order = torch.sort(load.double(), dim=1)
    real = torch.isfinite(sorted_load)
    level_load = torch.where(real, sorted_load, 0.0)
    cumulative = torch.cumsum(level_load, 1)
    ranks = torch.arange(1, load.shape[1] + 1, dtype=torch.float64, device=load.device)
    cost_to_level = torch.where(real, level_load * ranks - cumulative, torch.inf)  # items to level bin m
    filled = (cost_to_level <= items[:, None]).sum(1)  # [n] bins that receive items (>= 1)
    level = (items + cumulative.gather(1, (filled - 1)[:, None]).squeeze(1)) / filled  # [n]
    receives = ranks[None, :] <= filled[:, None]  # [n, R]
    base = torch.where(receives, torch.clamp(torch.floor(level[:, None] - level_load), min=0), 0).long()
    extra = items - base.sum(1)  # [n], < filled
    # The leftover units go to the bins that end lowest, as the one-at-a-time loop would.
    end = torch.where(receives, level_load + base, torch.inf)
    position = torch.argsort(torch.argsort(end, dim=1, stable=True), dim=1, stable=True)
    base += (position < extra[:, None]).long()
    return torch.zeros_like(base).scatter_(1, order, base)


def assign_replicas(
    expert_ids: torch.Tensor,  # [T, k] int
    layer: int,
    tables: DispatchTables,
    group_load: torch.Tensor,  # [G], updated in place with this call's assignments
) -> torch.Tensor:
    """Group of every (token, expert) pair, [T, k] int64. `group_load` is updated in place so a router
    can carry it across the micro-batches of a step (start from zeros per layer and step). All tensors
    on one device (see `DispatchTables.to`)."""
    l = tables.layer_index(layer)
    num_tokens, k = expert_ids.shape
    experts = expert_ids.reshape(-1).long()  # [T*k] items
    device = expert_ids.device
    token = torch.arange(num_tokens, device=device).repeat_interleave(k)  # [T*k]
    candidates = tables.replica_groups[l][experts]  # [T*k, R]
    count = tables.replica_count[l][experts]  # [T*k]
    groups = torch.where(count == 1, candidates[:, 0], -1)  # [T*k]

    def assign(items: torch.Tensor, chosen: torch.Tensor) -> None:
        groups[items] = chosen
        used[token[items], chosen] = True
        group_load.add_(torch.bincount(chosen, minlength=tables.num_groups).to(group_load.dtype))

    used = torch.zeros(num_tokens, tables.num_groups, dtype=torch.bool, device=device)  # [T, G]
    assign(torch.nonzero(count == 1).squeeze(1), groups[count == 1])
    pending = torch.nonzero(count > 1).squeeze(1)  # items of replicated experts still to place
    while len(pending):
        options = candidates[pending]  # [P, R]
        safe = options.clamp(min=0)
        on_used = used[token[pending, None], safe] & (options >= 0)  # [P, R]
        hit = on_used.any(1)  # [P]
        if bool(hit.any()):
            load = torch.where(on_used[hit], group_load[safe[hit]].double(), torch.inf)
            assign(pending[hit], safe[hit].gather(1, load.argmin(1, keepdim=True)).squeeze(1))
            pending = pending[~hit]
            continue
        # Free choice, for each token's first waiting item at once (so a group it opens counts as used
        # for its next ones): water-fill each expert's items over its replicas.
        token_of = token[pending]
        first = torch.ones_like(hit)
        first[1:] = token_of[1:] != token_of[:-1]  # pending is in item order, so grouped by token
        items = pending[first]
        expert, which = torch.unique(experts[items], return_inverse=True)  # [U], [I]
        replicas = tables.replica_groups[l][expert]  # [U, R]
        per_expert = torch.bincount(which, minlength=len(expert))  # [U]
        replica_load = torch.where(replicas >= 0, group_load[replicas.clamp(min=0)].double(), torch.inf)
        counts = water_fill(replica_load, per_expert)  # [U, R]
        by_expert = torch.argsort(which, stable=True)
        rank = torch.empty_like(which)  # position of each item among its expert's items
        start_of_expert = torch.cumsum(per_expert, 0) - per_expert  # [U]
        rank[by_expert] = torch.arange(len(which), device=device) - start_of_expert[which[by_expert]]
        slot = (rank[:, None] >= torch.cumsum(counts, 1)[which]).sum(1)
        assign(items, replicas[which, slot])
        pending = pending[~first]
    return groups.reshape(num_tokens, k)
