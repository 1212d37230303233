"""Rotary position embeddings, as transformers computes them (`rotate_half` form, float32 tables).

Two frequency schedules: the default one, and YaRN (DeepSeek-V3's long-context rope), which interpolates the low
frequencies and scales cos/sin by an attention factor. Two layouts of the rotated dims: the two halves
(`apply_rope`), or interleaved pairs (`apply_rope_interleaved`, DeepSeek's `rope_interleave`).
"""

from __future__ import annotations

import math

import torch

from switchyard.configs.model import YarnScaling


class Rope:
    def __init__(self, head_dim: int, theta: float, max_positions: int, yarn: YarnScaling | None = None,
                 device: torch.device | str = "cpu"):
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))  # [d/2]
        attention_factor = 1.0
        if yarn is not None:
            inv_freq, attention_factor = yarn_frequencies(head_dim, theta, yarn)
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)  # [P, d/2]
        angles = torch.cat([angles, angles], dim=-1)  # [P, d]
        # computed on the host in float32 (as transformers does), then kept where the positions are
        self.cos = (angles.cos() * attention_factor).to(device)
        self.sin = (angles.sin() * attention_factor).to(device)

    def tables(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for `positions` [T] → each [T, 1, d], ready to broadcast over heads."""
        return self.cos[positions, None].to(dtype), self.sin[positions, None].to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, d] rotated by position."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def apply_rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, d] whose rotated pairs are (x0, x1), (x2, x3), …; as transformers does it, the result is
    de-interleaved (evens' rotation, then odds'), which is harmless because queries and keys get the same order."""
    half = x.shape[-1] // 2
    cos, sin = cos[..., :half], sin[..., :half]  # the tables are cat(freqs, freqs)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.cat([even * cos - odd * sin, odd * cos + even * sin], dim=-1)


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_frequencies(dim: int, theta: float, yarn: YarnScaling) -> tuple[torch.Tensor, float]:
    """YaRN: inv_freq [d/2] blended between extrapolation (high frequencies) and interpolation by `factor` (low
    ones); and the factor cos/sin are scaled by."""
    attention_factor = yarn.attention_factor
    if attention_factor is None:
        if yarn.mscale and yarn.mscale_all_dim:
            attention_factor = yarn_mscale(yarn.factor, yarn.mscale) / yarn_mscale(yarn.factor, yarn.mscale_all_dim)
        else:
            attention_factor = yarn_mscale(yarn.factor)

    def correction_dim(rotations: float) -> float:
        return dim * math.log(yarn.original_max_position_embeddings / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(yarn.beta_fast), correction_dim(yarn.beta_slow)
    if yarn.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp  # [d/2] share of each frequency kept as is
    pos_freqs = theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    inv_freq = 1.0 / (yarn.factor * pos_freqs) * (1 - extrapolation) + 1.0 / pos_freqs * extrapolation
    return inv_freq, float(attention_factor)
