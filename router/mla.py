"""Multi-head latent attention (MLA, DeepSeek-V2/V3) over a compressed cache.

Per token, keys and values of all heads come from one small latent:

    c = norm(kv_a(h)[:r])                    # [r]      the kv latent (r = kv_lora_rank), cached
    k_rope = rope(kv_a(h)[r:])               # [dr]     one rotated key part for all heads, cached
    k_h = [W_uk_h c, k_rope],  v_h = W_uv_h c  # per head, W_uk/W_uv = the rows of kv_b_proj

so the cache holds r + dr numbers per token and layer instead of 2·nh·d for per-head K and V.

Attention is computed in one of two equivalent ways (DeepSeek's "naive" and "absorb" modes):
- expanded (prefill): rebuild per-head K and V from the cached latents and run ordinary attention. Cheapest
  when many queries share the keys.
- absorbed (decode, one new token per sequence): fold W_uk into the query (q_h·k_h = (W_uk_hᵀ q_h)·c) and W_uv
  into the output, so attention runs directly on the cached latents, as multi-query attention with head width
  r + dr, and the cache is never expanded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from switchyard.configs.model import ModelConfig
from switchyard.router.batch import StepBatch
from switchyard.router.kv_cache import MLACache
from switchyard.router.ops import attend_by_kind, cache_rows, causal_attention, rms_norm, write_cache
from switchyard.router.rope import Rope, apply_rope, apply_rope_interleaved, yarn_mscale

# diff with the decoder norms: the reference builds the latent norms with RMSNorm's default eps, not rms_norm_eps.
LATENT_NORM_EPS = 1e-6


@dataclass
class MLAWeights:
    wkv_a: torch.Tensor  # [r + dr, H] kv_a_proj_with_mqa
    kv_a_norm: torch.Tensor  # [r]
    wkv_b: torch.Tensor  # [nh * (dn + dv), r] kv_b_proj
    wo: torch.Tensor  # [H, nh * dv]
    wq: torch.Tensor | None = None  # [nh * (dn + dr), H] when q_lora_rank is null
    wq_a: torch.Tensor | None = None  # [rq, H]
    q_a_norm: torch.Tensor | None = None  # [rq]
    wq_b: torch.Tensor | None = None  # [nh * (dn + dr), rq]

    @classmethod
    def load(cls, get: Callable[[str, tuple[int, ...]], torch.Tensor], prefix: str, config: ModelConfig) -> "MLAWeights":
        """`get(name, shape)` reads one tensor; `prefix` is `model.layers.{l}.self_attn`."""
        m, H, nh = config.mla, config.hidden_size, config.num_heads
        r = m.kv_lora_rank
        w = cls(wkv_a=get(f"{prefix}.kv_a_proj_with_mqa.weight", (r + m.qk_rope_head_dim, H)),
                kv_a_norm=get(f"{prefix}.kv_a_layernorm.weight", (r,)),
                wkv_b=get(f"{prefix}.kv_b_proj.weight", (nh * (m.qk_nope_head_dim + m.v_head_dim), r)),
                wo=get(f"{prefix}.o_proj.weight", (H, nh * m.v_head_dim)))
        q_out = nh * m.qk_head_dim
        if m.q_lora_rank is None:
            w.wq = get(f"{prefix}.q_proj.weight", (q_out, H))
        else:
            w.wq_a = get(f"{prefix}.q_a_proj.weight", (m.q_lora_rank, H))
            w.q_a_norm = get(f"{prefix}.q_a_layernorm.weight", (m.q_lora_rank,))
            w.wq_b = get(f"{prefix}.q_b_proj.weight", (q_out, m.q_lora_rank))
        return w


def softmax_scale(config: ModelConfig) -> float:
    """1/sqrt(qk_head_dim), times yarn's mscale² where the rope is yarn with `mscale_all_dim`."""
    scale = config.mla.qk_head_dim ** -0.5
    yarn = config.rope_yarn
    if yarn is not None and yarn.mscale_all_dim:
        scale *= yarn_mscale(yarn.factor, yarn.mscale_all_dim) ** 2
    return scale


def mla_attention(config: ModelConfig, w: MLAWeights, h: torch.Tensor, layer: int, batch: StepBatch,
                  cache: MLACache, rope: Rope) -> torch.Tensor:
    """h [T, H] normed hidden states → attention output [T, H] (after o_proj); writes the step's latents."""
    m, nh, T = config.mla, config.num_heads, h.shape[0]
    r, dn, dv = m.kv_lora_rank, m.qk_nope_head_dim, m.v_head_dim
    if w.wq is not None:
        q = F.linear(h, w.wq)
    else:
        q = F.linear(rms_norm(F.linear(h, w.wq_a), w.q_a_norm, LATENT_NORM_EPS), w.wq_b)
    q_nope, q_rope = q.view(T, nh, m.qk_head_dim).split([dn, m.qk_rope_head_dim], dim=-1)  # [T, nh, dn], [T, nh, dr]
    kv = F.linear(h, w.wkv_a)  # [T, r + dr]
    latent = rms_norm(kv[:, :r], w.kv_a_norm, LATENT_NORM_EPS)  # [T, r]
    cos, sin = rope.tables(batch.positions, h.dtype)
    rotate = apply_rope_interleaved if m.rope_interleave else apply_rope
    q_rope, k_rope = rotate(q_rope, cos, sin), rotate(kv[:, None, r:], cos, sin)  # [T, nh, dr], [T, 1, dr]

    pool = cache.latents[layer]  # [blocks, block_size, r + dr]
    write_cache(pool, batch, torch.cat([latent, k_rope[:, 0]], dim=-1))
    wkv_b = w.wkv_b.view(nh, dn + dv, r)
    scale = softmax_scale(config)

    def attend(tokens: torch.Tensor | None, part: StepBatch) -> torch.Tensor:  # [part's T, nh*dv]
        qn, qr = (q_nope, q_rope) if tokens is None else (q_nope[tokens], q_rope[tokens])
        cached = cache_rows(pool, part)  # [B, L, r + dr]
        if part.max_new == 1:  # absorbed: attend over the latents themselves (T = B, one query per sequence)
            q_latent = torch.einsum("thd,hdr->thr", qn, wkv_b[:, :dn])  # [B, nh, r]
            q = torch.cat([q_latent, qr], dim=-1)[:, None]  # [B, 1, nh, r + dr]
            # One shared key head: the heads go in as query rows, so nothing is copied per head (SDPA's GQA
            # path would copy the latents nh times, 50x slower on CPU).
            visible = torch.arange(cached.shape[1], device=h.device)[None, :] <= part.cached_lens[:, None]  # [B, L]
            out = F.scaled_dot_product_attention(q, cached[:, None], cached[:, None, :, :r],
                                                 attn_mask=visible[:, None, None], scale=scale)  # [B, 1, nh, r]
            return torch.einsum("thr,hvr->thv", out[:, 0], wkv_b[:, dn:]).reshape(qn.shape[0], nh * dv)
        # expanded: per-head keys and values from the latents
        B, L = cached.shape[:2]
        kv_heads = F.linear(cached[..., :r], w.wkv_b).view(B, L, nh, dn + dv).transpose(1, 2)  # [B, nh, L, dn + dv]
        k_nope, v = kv_heads.split([dn, dv], dim=-1)
        k = torch.cat([k_nope, cached[:, None, :, r:].expand(B, nh, L, m.qk_rope_head_dim)], dim=-1)  # [B, nh, L, dqk]
        return causal_attention(torch.cat([qn, qr], dim=-1), k, v, part, scale)  # [T, nh*dv]

    out = attend_by_kind(batch, attend)
    return F.linear(out, w.wo)
