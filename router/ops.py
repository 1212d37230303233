"""Tensor ops shared by the dense model and its attention variants (grouped-query and latent attention)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from switchyard.router.batch import StepBatch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return weight * (x.float() * torch.rsqrt(variance + eps)).to(x.dtype)


def cache_rows(pool: torch.Tensor, batch: StepBatch) -> torch.Tensor:
    """The step's sequences' entries of one layer's block pool [blocks, block_size, ...] → [B, L, ...] in
    position order, L = max_total: one gather of their blocks. Entries past a sequence's end are whatever the
    padding block holds; attention masks them out."""
    B, N = batch.block_tables.shape
    rows = pool.index_select(0, batch.block_tables.view(-1))  # [B*N, block_size, ...]; faster than pool[tables]
    return rows.view(B, N * pool.shape[1], *pool.shape[2:])[:, :batch.max_total]


def write_cache(pool: torch.Tensor, batch: StepBatch, entries: torch.Tensor) -> None:
    """Store the step's new tokens' entries [T, ...] at their rows of the block pool (in place)."""
    pool.flatten(0, 1).index_copy_(0, batch.slot_mapping, entries.to(pool.dtype))


def attend_by_kind(batch: StepBatch, attend) -> torch.Tensor:
    """`attend(tokens, part)` → [tokens of part, D] over each of `batch.attention_parts` (decoding and
    prefilling sequences apart), put back in packed order → [T, D]; `tokens` is None for the whole step."""
    parts = batch.attention_parts
    if len(parts) == 1:
        return attend(None, batch)
    out = None
    for tokens, part in parts:
        part_out = attend(tokens, part)
        if out is None:
            out = part_out.new_empty(batch.token_ids.shape[0], part_out.shape[-1])
        out[tokens] = part_out
    return out


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
    query_pos = batch.cached_lens[:, None] + torch.arange(S, device=q.device)[None, :]  # [B, S]
    mask = torch.arange(L, device=q.device)[None, None, :] <= query_pos[:, :, None]  # [B, S, L]; pad rows see key 0
    out = F.scaled_dot_product_attention(q_pad, k, v, attn_mask=mask[:, None], scale=scale,
                                         enable_gqa=nh != k.shape[1])  # [B, nh, S, dv]
    out = out.transpose(1, 2).reshape(B * S, nh * v.shape[-1])
    return out if S == 1 else out[batch.padded_index]
