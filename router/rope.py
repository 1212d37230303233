"""Rotary position embeddings, as transformers computes them (`rotate_half` form, float32 tables)."""

from __future__ import annotations

import torch


class Rope:
    def __init__(self, head_dim: int, theta: float, max_positions: int):
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))  # [d/2]
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)  # [P, d/2]
        angles = torch.cat([angles, angles], dim=-1)  # [P, d]
        self.cos = angles.cos()
        self.sin = angles.sin()

    def tables(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for `positions` [T] → each [T, 1, d], ready to broadcast over heads."""
        return self.cos[positions, None].to(dtype), self.sin[positions, None].to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, d] rotated by position."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin
