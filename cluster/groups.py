"""Which (layer, expert) pairs each expert group holds, as the cluster needs it.

A placement file (`switchyard place -o placement.json`) gives the groups; without one, experts are split
contiguously: group g holds experts [g·E/G, (g+1)·E/G) of every MoE layer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from switchyard.configs.model import ConfigError, ModelConfig

GroupAssignment = dict[int, list[int]]  # layer -> expert ids held


def contiguous_groups(config: ModelConfig, num_groups: int) -> list[GroupAssignment]:
    if num_groups > config.num_experts:
        raise ConfigError(f"`num_groups` ({num_groups}) exceeds the model's {config.num_experts} experts")
    bounds = [round(g * config.num_experts / num_groups) for g in range(num_groups + 1)]
    return [{layer: list(range(bounds[g], bounds[g + 1])) for layer in config.moe_layers} for g in range(num_groups)]


def groups_from_file(path: str | Path, config: ModelConfig, num_groups: int) -> list[GroupAssignment]:
    """Read a placement JSON and check it covers every expert of every MoE layer of this model."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"placement file {path}: {err}") from err
    groups = [{int(layer): [int(e) for e in experts] for layer, experts in g["experts"].items()}
              for g in raw.get("groups", [])]
    if len(groups) != num_groups:
        raise ConfigError(f"placement file {path} has {len(groups)} groups; `num_groups` is {num_groups}")
    for layer in config.moe_layers:
        held = set().union(*(g.get(layer, []) for g in groups))
        missing = sorted(set(range(config.num_experts)) - held)
        if missing:
            raise ConfigError(f"placement file {path}: layer {layer} experts {missing[:8]} are in no group")
    return groups


def group_of_expert(groups: list[GroupAssignment], config: ModelConfig) -> dict[int, torch.Tensor]:
    """Per MoE layer, [E] the first group that holds each expert (the dispatch table without replicas)."""
    tables = {}
    for layer in config.moe_layers:
        table = torch.full((config.num_experts,), -1, dtype=torch.long)
        for g in reversed(range(len(groups))):
            table[groups[g].get(layer, [])] = g
        tables[layer] = table
    return tables
