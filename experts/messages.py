"""What the router sends an expert group for one layer, and what comes back. Tensors only, no tuples."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ExpertRequest:
    """One layer's work for one group: the hidden states of the tokens routed to it."""

    layer: int
    hidden: torch.Tensor  # [T, H] post-attention-norm hidden states
    expert_ids: torch.Tensor  # [T, k] int64 global expert ids; -1 where this group is not asked
    weights: torch.Tensor  # [T, k] float32 gate weights, matching expert_ids


@dataclass
class ExpertResponse:
    layer: int
    hidden: torch.Tensor  # [T, H] sum over the group's (token, expert) pairs of weight * expert(hidden)
