"""Tensor ops shared by the dense model and its attention variants (grouped-query and latent attention)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from switchyard.router.batch import StepBatch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return weight * (x.float() * torch.rsqrt(variance + eps)).to(x.dtype)


def cache_rows(cache: torch.Tensor, batch: StepBatch) -> torch.Tensor:
    """The step's sequences' rows of a slot-major cache [slots, ..., max_len, d] → [B, ..., L, d], L = max_total.
    When the slots are a contiguous run (steady-state decode), a view: no copy of the cache."""
    first, L = batch.first_slot_if_contiguous, batch.max_total
    if first is not None:
        return cache[first:first + batch.num_seqs, ..., :L, :]
    return cache[..., :L, :][batch.slots]


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: StepBatch, scale: float) -> torch.Tensor:
    """Causal attention of the step's queries over each sequence's cached and new keys.

    q [T, nh, dk] packed; k [B, kvh, L, dk], v [B, kvh, L, dv] per sequence (L = batch.max_total; nh a multiple
    of kvh) → [T, nh*dv].
    """
    B, S, L = batch.num_seqs, batch.max_new, batch.max_total
    T, nh, d = q.shape
    if S == 1:  # decode: one query per sequence, no padding to undo
        q_pad = q.view(B, 1, nh, d).transpose(1, 2)  # [B, nh, 1, dk]
    else:
        q_pad = q.new_zeros(B * S, nh, d)
        q_pad[batch.padded_index] = q
        q_pad = q_pad.view(B, S, nh, d).transpose(1, 2)  # [B, nh, S, dk]
    query_pos = batch.cached_lens[:, None] + torch.arange(S)[None, :]  # [B, S]
    mask = torch.arange(L)[None, None, :] <= query_pos[:, :, None]  # [B, S, L]; pad rows still see key 0
    out = F.scaled_dot_product_attention(q_pad, k, v, attn_mask=mask[:, None], scale=scale,
                                         enable_gqa=nh != k.shape[1])  # [B, nh, S, dv]
    out = out.transpose(1, 2).reshape(B * S, nh * v.shape[-1])
    return out if S == 1 else out[batch.padded_index]
