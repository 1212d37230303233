"""The model's architecture as one typed, validated object, parsed from a Hugging Face `config.json`.

Every family is described by the same fields; a family is only the set of differences from Mixtral:

| family      | experts key          | gate softmax → top-k, renormalised?   | attention extras               | shared expert        |
|-------------|----------------------|----------------------------------------|--------------------------------|----------------------|
| mixtral     | num_local_experts    | always                                 | -                              | -                    |
| qwen2_moe   | num_experts          | if norm_topk_prob                      | q/k/v bias                     | yes, sigmoid-gated   |
| qwen3_moe   | num_experts          | if norm_topk_prob                      | RMSNorm on q and k per head    | -                    |
| olmoe       | num_experts          | if norm_topk_prob                      | RMSNorm on all of q and k, clip| -                    |

No I/O here: `ModelConfig.from_hf_dict` takes the parsed JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]
SUPPORTED_FAMILIES: tuple[str, ...] = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe")
QKNorm = Literal["none", "per_head", "full"]


class ConfigError(ValueError):
    """A config that cannot be served; the message names the field."""


@dataclass(frozen=True)
class ModelConfig:
    family: Family
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    num_experts: int
    top_k: int
    moe_intermediate_size: int
    # Dense MLP width for layers that are not sparse (Qwen's `mlp_only_layers` / `decoder_sparse_step`).
    intermediate_size: int
    # Which layers route to experts; the others run a dense MLP on the router.
    sparse_layers: tuple[bool, ...]
    norm_topk_prob: bool
    shared_expert_intermediate_size: int = 0
    qkv_bias: bool = False
    qk_norm: QKNorm = "none"
    clip_qkv: float | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    torch_dtype: str = "float32"
    architecture: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        positive = ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                    "num_experts", "top_k", "moe_intermediate_size", "max_position_embeddings")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"config field `{name}` must be > 0, got {getattr(self, name)}")
        if self.top_k > self.num_experts:
            raise ConfigError(f"`num_experts_per_tok` ({self.top_k}) exceeds the number of experts ({self.num_experts})")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"`num_attention_heads` ({self.num_heads}) is not a multiple of "
                              f"`num_key_value_heads` ({self.num_kv_heads})")
        if len(self.sparse_layers) != self.num_layers:
            raise ConfigError("sparse layer flags must cover `num_hidden_layers`")
        if self.hidden_act != "silu":
            raise ConfigError(f"`hidden_act` = {self.hidden_act!r} is not supported (only 'silu')")

    @property
    def has_shared_expert(self) -> bool:
        return self.shared_expert_intermediate_size > 0

    @property
    def moe_layers(self) -> tuple[int, ...]:
        return tuple(i for i, sparse in enumerate(self.sparse_layers) if sparse)

    @property
    def num_parameters(self) -> int:
        """Parameter count implied by the architecture (embeddings and LM head counted once if tied)."""
        h, i_moe, e = self.hidden_size, self.moe_intermediate_size, self.num_experts
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        attention = h * q + 2 * h * kv + q * h
        total = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        for sparse in self.sparse_layers:
            total += attention
            if sparse:
                total += e * 3 * h * i_moe + e * h + 3 * h * self.shared_expert_intermediate_size
            else:
                total += 3 * h * self.intermediate_size
        return total

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any]) -> "ModelConfig":
        """Parse a transformers `config.json` dict; raises ConfigError naming the bad field."""
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
        experts_key = ("num_local_experts", "num_experts") if family == "mixtral" else ("num_experts", "num_local_experts")
        num_experts = int(need(*experts_key))

        if family in ("qwen2_moe", "qwen3_moe"):
            mlp_only = set(raw.get("mlp_only_layers") or [])
            step = int(raw.get("decoder_sparse_step") or 1)
            sparse = tuple((i not in mlp_only) and (i + 1) % step == 0 for i in range(num_layers))
            moe_inter = int(need("moe_intermediate_size"))
            dense_inter = int(raw.get("intermediate_size") or 0)
            if raw.get("use_sliding_window"):
                raise ConfigError("config field `use_sliding_window` = true is not supported")
        else:
            sparse = (True,) * num_layers
            moe_inter = int(need("intermediate_size"))
            dense_inter = moe_inter
        if family == "mixtral" and raw.get("sliding_window"):
            raise ConfigError(f"config field `sliding_window` = {raw['sliding_window']} is not supported "
                              "(sliding-window attention); set it to null")

        rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", None):
            raise ConfigError(f"config field `rope_parameters.rope_type` = {rope_type!r} is not supported "
                              "(only 'default')")
        rope_theta = float(rope.get("rope_theta", raw.get("rope_theta", 10000.0)))

        eos = raw.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))

        return cls(
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
            qkv_bias=bool(raw.get("qkv_bias", True)) if family == "qwen2_moe" else bool(raw.get("attention_bias", False)),
            qk_norm={"qwen3_moe": "per_head", "olmoe": "full"}.get(family, "none"),
            clip_qkv=raw.get("clip_qkv") if family == "olmoe" else None,
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            max_position_embeddings=int(raw.get("max_position_embeddings", 4096)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            hidden_act=str(raw.get("hidden_act", "silu")),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_ids=eos_ids,
            pad_token_id=raw.get("pad_token_id"),
            torch_dtype=str(raw.get("dtype") or raw.get("torch_dtype") or "float32"),
            architecture=(raw.get("architectures") or [""])[0],
            extra=raw,
        )
