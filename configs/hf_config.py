"""A transformers `config.json` (parsed JSON) → the fields of `ModelConfig`: each family's keys and defaults, and
what is refused, naming the field (see `configs/model.py` for what the families differ in)."""

from __future__ import annotations

from typing import Any

from switchyard.configs.model import SUPPORTED_FAMILIES, ConfigError, LatentAttention, YarnScaling


def model_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """`ModelConfig`'s fields from a `config.json` dict; raises ConfigError naming the bad field."""
    family = raw.get("model_type")
    if family not in SUPPORTED_FAMILIES:
        raise ConfigError(f"config field `model_type` = {family!r} is not supported; "
                          f"supported: {', '.join(SUPPORTED_FAMILIES)}")

    def need(key: str, *aliases: str) -> Any:
        for k in (key, *aliases):
            if raw.get(k) is not None:
                return raw[k]
        raise ConfigError(f"config field `{key}` is missing (model_type {family})")

    num_layers = int(need("num_hidden_layers"))
    num_heads = int(need("num_attention_heads"))
    hidden = int(need("hidden_size"))
    head_dim = raw.get("head_dim") or hidden // num_heads
    experts_key = {"mixtral": ("num_local_experts", "num_experts"),
                   "deepseek_v3": ("n_routed_experts",)}.get(family, ("num_experts", "num_local_experts"))
    num_experts = int(need(*experts_key))

    if family in ("qwen2_moe", "qwen3_moe"):
        mlp_only = set(raw.get("mlp_only_layers") or [])
        step = int(raw.get("decoder_sparse_step") or 1)
        sparse = tuple((i not in mlp_only) and (i + 1) % step == 0 for i in range(num_layers))
        moe_inter = int(need("moe_intermediate_size"))
        dense_inter = int(raw.get("intermediate_size") or 0)
        if raw.get("use_sliding_window"):
            raise ConfigError("config field `use_sliding_window` = true is not supported")
    elif family == "deepseek_v3":
        first_dense = int(raw.get("first_k_dense_replace") or 0)
        freq = int(raw.get("moe_layer_freq") or 1)
        sparse = tuple(i >= first_dense and i % freq == 0 for i in range(num_layers))
        moe_inter = int(need("moe_intermediate_size"))
        dense_inter = int(need("intermediate_size")) if not all(sparse) else int(raw.get("intermediate_size") or 0)
    else:
        sparse = (True,) * num_layers
        moe_inter = int(need("intermediate_size"))
        dense_inter = moe_inter
    if family == "mixtral" and raw.get("sliding_window"):
        raise ConfigError(f"config field `sliding_window` = {raw['sliding_window']} is not supported "
                          "(sliding-window attention); set it to null")

    rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    rope_types = ("default", "yarn") if family == "deepseek_v3" else ("default",)
    if rope_type not in (*rope_types, None):
        raise ConfigError(f"config field `rope_parameters.rope_type` = {rope_type!r} is not supported "
                          f"(only {' or '.join(map(repr, rope_types))})")
    rope_theta = float(rope.get("rope_theta", raw.get("rope_theta", 10000.0)))
    max_positions = int(raw.get("max_position_embeddings", 4096))

    eos = raw.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))

    fields = dict(
        family=family,
        vocab_size=int(need("vocab_size")),
        hidden_size=hidden,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=int(raw.get("num_key_value_heads") or num_heads),
        head_dim=int(head_dim),
        num_experts=num_experts,
        top_k=int(need("num_experts_per_tok")),
        moe_intermediate_size=moe_inter,
        intermediate_size=dense_inter,
        sparse_layers=sparse,
        # Mixtral always renormalises the top-k weights; the others say so in the config.
        norm_topk_prob=True if family == "mixtral" else bool(raw.get("norm_topk_prob", False)),
        shared_expert_intermediate_size=int(raw.get("shared_expert_intermediate_size") or 0)
        if family == "qwen2_moe" else 0,
        shared_expert_gated=family == "qwen2_moe",
        qkv_bias=bool(raw.get("qkv_bias", True)) if family == "qwen2_moe" else bool(raw.get("attention_bias", False)),
        qk_norm={"qwen3_moe": "per_head", "olmoe": "full"}.get(family, "none"),
        clip_qkv=raw.get("clip_qkv") if family == "olmoe" else None,
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        rope_theta=rope_theta,
        max_position_embeddings=max_positions,
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        hidden_act=str(raw.get("hidden_act", "silu")),
        bos_token_id=raw.get("bos_token_id"),
        eos_token_ids=eos_ids,
        pad_token_id=raw.get("pad_token_id"),
        torch_dtype=str(raw.get("dtype") or raw.get("torch_dtype") or "float32"),
        architecture=(raw.get("architectures") or [""])[0],
        extra=raw,
    )
    if family == "deepseek_v3":
        fields.update(_deepseek_v3_fields(raw, need, rope if rope_type == "yarn" else None, max_positions))
    return fields


def _deepseek_v3_fields(raw: dict[str, Any], need, yarn: dict | None, max_positions: int) -> dict[str, Any]:
    """What deepseek_v3 sets differently from the other families (see the module table)."""
    for key, supported in (("scoring_func", "sigmoid"), ("topk_method", "noaux_tc")):
        if raw.get(key, supported) != supported:
            raise ConfigError(f"config field `{key}` = {raw[key]!r} is not supported (only {supported!r})")
    for key in ("quantization_config", "attention_bias"):
        if raw.get(key):
            raise ConfigError(f"config field `{key}` is not supported for deepseek_v3 (got {raw[key]!r})")
    q_lora_rank = raw.get("q_lora_rank")
    mla = LatentAttention(
        q_lora_rank=None if q_lora_rank is None else int(q_lora_rank),
        kv_lora_rank=int(need("kv_lora_rank")),
        qk_nope_head_dim=int(need("qk_nope_head_dim")),
        qk_rope_head_dim=int(need("qk_rope_head_dim")),
        v_head_dim=int(need("v_head_dim")),
        rope_interleave=bool(raw.get("rope_interleave", True)))
    num_heads = int(need("num_attention_heads"))
    rope_yarn = None
    if yarn is not None:
        original = int(raw.get("original_max_position_embeddings") or yarn.get("original_max_position_embeddings")
                       or max_positions)
        factor = yarn.get("factor")
        if factor is None and original == max_positions:
            raise ConfigError("config field `rope_parameters.factor` is missing (rope_type yarn)")
        rope_yarn = YarnScaling(
            factor=float(factor) if factor is not None else max_positions / original,  # as transformers
            original_max_position_embeddings=original,
            beta_fast=float(yarn.get("beta_fast") or 32), beta_slow=float(yarn.get("beta_slow") or 1),
            mscale=yarn.get("mscale"), mscale_all_dim=yarn.get("mscale_all_dim"),
            attention_factor=yarn.get("attention_factor"), truncate=bool(yarn.get("truncate", True)))
    return dict(
        # MLA has no key/value heads of its own: every head reads the one latent.
        num_kv_heads=num_heads,
        head_dim=mla.qk_rope_head_dim,
        shared_expert_intermediate_size=int(raw.get("n_shared_experts") or 0) * int(need("moe_intermediate_size")),
        shared_expert_gated=False,
        norm_topk_prob=bool(raw.get("norm_topk_prob", True)),
        scoring="sigmoid",
        gate_score_bias=True,
        # A null group count means no group limit, as in DeepSeek's own code (n_group = topk_group = 1).
        num_expert_groups=int(raw.get("n_group") or 1),
        topk_groups=int(raw.get("topk_group") or 1),
        routed_scaling_factor=float(raw.get("routed_scaling_factor", 1.0)),
        mla=mla,
        rope_yarn=rope_yarn,
    )
