"""The placement the cluster runs: which (layer, expert) pairs each expert group holds, and, per layer, which
group each token's experts go to.

A placement file (`switchyard place -o placement.json`) gives the groups; without one, experts are split
contiguously. Where a placement replicates an expert in several groups, the router's replica choice
(`assign_replicas`) sends the token to a group it already uses, else to the least loaded replica.
"""

from __future__ import annotations

import torch

from switchyard.configs.model import ConfigError, ModelConfig
from switchyard.router.affinity.dispatch import DispatchTables, assign_replicas
from switchyard.router.affinity.placement import Placement, PlacementError
from switchyard.router.affinity.strategies import contiguous


def load_placement(path: str | None, model: ModelConfig, num_groups: int) -> Placement:
    """The placement file at `path` (checked against the model), or the contiguous split."""
    if path is None:
        if model.num_experts % num_groups:
            raise ConfigError(f"`num_groups` ({num_groups}) must divide the model's {model.num_experts} experts "
                              "for the contiguous split; or give a placement file")
        return contiguous(model.moe_layers, model.num_experts, num_groups)
    try:
        placement = Placement.load(path)
    except (OSError, PlacementError, ValueError) as err:
        raise ConfigError(f"placement file {path}: {err}") from err
    if placement.num_groups != num_groups:
        raise ConfigError(f"placement file {path} has {placement.num_groups} groups; `num_groups` is {num_groups}")
    if placement.num_experts != model.num_experts or tuple(placement.layers) != model.moe_layers:
        raise ConfigError(f"placement file {path} is for {placement.num_experts} experts on layers "
                          f"{list(placement.layers)}; the model has {model.num_experts} on {list(model.moe_layers)}")
    return placement


class GroupChooser:
    """Per layer, the group of every (token, expert): [T, k] expert ids → [T, k] group ids."""

    def __init__(self, placement: Placement):
        self.tables = DispatchTables.from_placement(placement)
        self.replicated = bool((self.tables.replica_count > 1).any())
        self.only_group = self.tables.replica_groups[..., 0]  # [L, E] the group, when there is one

    def __call__(self, layer: int, expert_ids: torch.Tensor) -> torch.Tensor:
        if not self.replicated:
            return self.only_group[self.tables.layer_index(layer)][expert_ids]
        load = torch.zeros(self.tables.num_groups, dtype=torch.long)
        return assign_replicas(expert_ids, layer, self.tables, load)
