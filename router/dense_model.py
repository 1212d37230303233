"""Everything of the model that is not a routed expert: embeddings, attention, norms, gates, dense and shared
MLPs, LM head. The router holds this; the routed experts live in expert groups.

A decoder layer is run in three steps so that the expert stage can be a call to another process:

    x = attention_block(l, x)                        # norm → attention (KV cache) → residual
    h, routing = moe_input(l, x)                     # norm → gate → top-k            [Router]
    y = experts(h, routing)                          # local group or remote groups   [Dispatch → Experts]
    x = moe_output(l, x, h, y)                       # + shared expert → residual     [Combine]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from switchyard.configs.model import ModelConfig
from switchyard.experts.checkpoint import Checkpoint, CheckpointError
from switchyard.experts.layout import moe_prefix
from switchyard.router.batch import StepBatch
from switchyard.router.gates import Routing, route  # Routing re-exported: expert backends import it from here
from switchyard.router.kv_cache import KVCache, MLACache
from switchyard.router.mla import MLAWeights, mla_attention
from switchyard.router.ops import attend_by_kind, cache_rows, causal_attention, rms_norm, write_cache
from switchyard.router.rope import Rope, apply_rope


def swiglu_mlp(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """x [T, H], w13 [2I, H], w2 [H, I] → [T, H]."""
    gate, up = F.linear(x, w13).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, w2)


@dataclass
class AttentionWeights:
    wqkv: torch.Tensor  # [(nh + 2*kvh)*d, H] q, k and v projections stacked: one GEMM instead of three
    wo: torch.Tensor  # [H, nh*d]
    bqkv: torch.Tensor | None = None  # [(nh + 2*kvh)*d]
    q_norm: torch.Tensor | None = None  # [d] per head (qwen3_moe) or [nh*d] (olmoe)
    k_norm: torch.Tensor | None = None


@dataclass
class LayerWeights:
    input_norm: torch.Tensor  # [H]
    post_norm: torch.Tensor  # [H]
    attention: AttentionWeights | MLAWeights
    gate: torch.Tensor | None = None  # [E, H] router of a sparse layer
    gate_score_bias: torch.Tensor | None = None  # [E] float32 `e_score_correction_bias` (deepseek_v3)
    dense_mlp: tuple[torch.Tensor, torch.Tensor] | None = None  # (w13 [2I, H], w2 [H, I]) of a dense layer
    shared_mlp: tuple[torch.Tensor, torch.Tensor] | None = None  # shared expert (w13, w2)
    shared_gate: torch.Tensor | None = None  # [1, H] sigmoid gate of the shared expert (qwen2_moe)


class DenseModel:
    def __init__(self, config: ModelConfig, embed: torch.Tensor, layers: list[LayerWeights],
                 final_norm: torch.Tensor, lm_head: torch.Tensor, max_positions: int | None = None):
        self.config = config
        self.embed_weight = embed  # [V, H]
        self.layers = layers
        self.final_norm = final_norm
        self.lm_head = lm_head  # [V, H]
        self.dtype = embed.dtype
        self.device = embed.device
        self.rope = Rope(config.head_dim, config.rope_theta, max_positions or config.max_position_embeddings,
                         config.rope_yarn, self.device)

    # -- loading ------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, ckpt: Checkpoint, dtype: torch.dtype = torch.float32, max_positions: int | None = None,
             device: torch.device | str = "cpu") -> "DenseModel":
        """Every dense weight, read from the checkpoint straight onto `device` in `dtype`."""
        cfg = ckpt.config
        H, V = cfg.hidden_size, cfg.vocab_size
        q_dim, kv_dim = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim

        def get(name: str, shape: tuple[int, ...]) -> torch.Tensor:
            return ckpt.get(name, shape).to(device=device, dtype=dtype)

        def mlp(prefix: str, inter: int) -> tuple[torch.Tensor, torch.Tensor]:
            w13 = torch.cat([get(f"{prefix}.gate_proj.weight", (inter, H)), get(f"{prefix}.up_proj.weight", (inter, H))])
            return w13, get(f"{prefix}.down_proj.weight", (H, inter))

        layers = []
        for i in range(cfg.num_layers):
            p = f"model.layers.{i}"
            a = f"{p}.self_attn"
            if cfg.mla is not None:  # diff with mixtral (deepseek_v3): latent attention
                attn = MLAWeights.load(get, a, cfg)
            else:
                projections = (("q", q_dim), ("k", kv_dim), ("v", kv_dim))
                attn = AttentionWeights(
                    wqkv=torch.cat([get(f"{a}.{n}_proj.weight", (d, H)) for n, d in projections]),
                    wo=get(f"{a}.o_proj.weight", (H, q_dim)))
                if cfg.qkv_bias:
                    attn.bqkv = torch.cat([get(f"{a}.{n}_proj.bias", (d,)) for n, d in projections])
            if cfg.qk_norm == "per_head":
                attn.q_norm = get(f"{a}.q_norm.weight", (cfg.head_dim,))
                attn.k_norm = get(f"{a}.k_norm.weight", (cfg.head_dim,))
            elif cfg.qk_norm == "full":
                attn.q_norm = get(f"{a}.q_norm.weight", (q_dim,))
                attn.k_norm = get(f"{a}.k_norm.weight", (kv_dim,))
            layer = LayerWeights(get(f"{p}.input_layernorm.weight", (H,)),
                                 get(f"{p}.post_attention_layernorm.weight", (H,)), attn)
            if cfg.sparse_layers[i]:
                mp = moe_prefix(ckpt, i)
                layer.gate = get(f"{mp}.gate.weight", (cfg.num_experts, H))
                if cfg.gate_score_bias:  # kept in float32, as the reference does
                    layer.gate_score_bias = ckpt.get(f"{mp}.gate.e_score_correction_bias", (cfg.num_experts,)).to(device, torch.float32)
                if cfg.shared_expert_gated:
                    layer.shared_mlp = mlp(f"{mp}.shared_expert", cfg.shared_expert_intermediate_size)
                    layer.shared_gate = get(f"{mp}.shared_expert_gate.weight", (1, H))
                elif cfg.has_shared_expert:  # diff with qwen2_moe (deepseek_v3): plural name, no gate
                    layer.shared_mlp = mlp(f"{mp}.shared_experts", cfg.shared_expert_intermediate_size)
            else:
                layer.dense_mlp = mlp(f"{p}.mlp", cfg.intermediate_size)
            layers.append(layer)

        embed = get("model.embed_tokens.weight", (V, H))
        if cfg.tie_word_embeddings or not ckpt.has("lm_head.weight"):
            if not cfg.tie_word_embeddings:
                raise CheckpointError("tensor `lm_head.weight` is missing and `tie_word_embeddings` is false")
            lm_head = embed
        else:
            lm_head = get("lm_head.weight", (V, H))
        return cls(cfg, embed, layers, get("model.norm.weight", (H,)), lm_head, max_positions)

    # -- the layer steps ----------------------------------------------------------------------------------
    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:  # [T] -> [T, H]
        return F.embedding(token_ids, self.embed_weight)

    def attention_block(self, index: int, x: torch.Tensor, batch: StepBatch, cache: KVCache | MLACache) -> torch.Tensor:
        """x [T, H] → x + attention(norm(x)); writes this step's keys and values into the cache."""
        cfg, w = self.config, self.layers[index].attention
        h = rms_norm(x, self.layers[index].input_norm, cfg.rms_norm_eps)
        if isinstance(w, MLAWeights):  # diff with mixtral (deepseek_v3): latent attention, compressed cache
            return x + mla_attention(cfg, w, h, index, batch, cache, self.rope)
        q_dim, kv_dim = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        q, k, v = F.linear(h, w.wqkv, w.bqkv).split([q_dim, kv_dim, kv_dim], dim=-1)  # [T, nh*d], [T, kvh*d] x2
        if cfg.qk_norm == "full":  # diff with mixtral (olmoe): one norm over all heads, before the split
            q, k = rms_norm(q, w.q_norm, cfg.rms_norm_eps), rms_norm(k, w.k_norm, cfg.rms_norm_eps)
        if cfg.clip_qkv is not None:  # diff with mixtral (olmoe)
            q, k, v = (t.clamp(-cfg.clip_qkv, cfg.clip_qkv) for t in (q, k, v))
        T = x.shape[0]
        q = q.view(T, cfg.num_heads, cfg.head_dim)
        k = k.view(T, cfg.num_kv_heads, cfg.head_dim)
        v = v.view(T, cfg.num_kv_heads, cfg.head_dim)
        if cfg.qk_norm == "per_head":  # diff with mixtral (qwen3_moe): norm over each head's dims
            q, k = rms_norm(q, w.q_norm, cfg.rms_norm_eps), rms_norm(k, w.k_norm, cfg.rms_norm_eps)
        cos, sin = self.rope.tables(batch.positions, x.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        keys, values = cache.keys[index], cache.values[index]  # [blocks, block_size, kvh, d]
        write_cache(keys, batch, k)
        write_cache(values, batch, v)

        def attend(tokens: torch.Tensor | None, part: StepBatch) -> torch.Tensor:
            return causal_attention(q if tokens is None else q[tokens], cache_rows(keys, part).transpose(1, 2),
                                    cache_rows(values, part).transpose(1, 2), part, cfg.head_dim ** -0.5)

        out = attend_by_kind(batch, attend)  # [T, nh*d]
        return x + F.linear(out, w.wo)

    def moe_input(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, Routing | None]:
        """Post-attention norm, and for a sparse layer the gate's top-k choice."""
        layer = self.layers[index]
        h = rms_norm(x, layer.post_norm, self.config.rms_norm_eps)
        if layer.gate is None:
            return h, None
        return h, route(self.config, h, layer.gate, layer.gate_score_bias)

    def moe_output(self, index: int, x: torch.Tensor, h: torch.Tensor, expert_out: torch.Tensor | None) -> torch.Tensor:
        """Combine: residual + routed experts' output (+ the shared expert), or the dense MLP."""
        layer = self.layers[index]
        if layer.dense_mlp is not None:
            return x + swiglu_mlp(h, *layer.dense_mlp)
        if layer.shared_mlp is not None:  # diff with mixtral (qwen2_moe, deepseek_v3): shared expert(s)
            shared = swiglu_mlp(h, *layer.shared_mlp)
            if layer.shared_gate is not None:  # qwen2_moe: sigmoid-gated
                shared = shared * torch.sigmoid(F.linear(h, layer.shared_gate))
            expert_out = expert_out + shared
        return x + expert_out

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # [B, H] -> [B, V] float32
        return F.linear(rms_norm(x, self.final_norm, self.config.rms_norm_eps), self.lm_head).float()
