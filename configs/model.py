"""The model's architecture as one typed, validated object, parsed from a Hugging Face `config.json`.

Every family is described by the same fields; a family is only the set of differences from Mixtral:

| family      | experts key          | gate softmax → top-k, renormalised?   | attention extras               | shared expert        |
|-------------|----------------------|----------------------------------------|--------------------------------|----------------------|
| mixtral     | num_local_experts    | always                                 | -                              | -                    |
| qwen2_moe   | num_experts          | if norm_topk_prob                      | q/k/v bias                     | yes, sigmoid-gated   |
| qwen3_moe   | num_experts          | if norm_topk_prob                      | RMSNorm on q and k per head    | -                    |
| olmoe       | num_experts          | if norm_topk_prob                      | RMSNorm on all of q and k, clip| -                    |
| deepseek_v3 | n_routed_experts     | sigmoid; see below                     | latent attention (MLA), below  | yes, ungated         |

deepseek_v3 in more detail:
- gate: sigmoid scores; `e_score_correction_bias` is added for choosing experts only (the weights come from the
  unbiased scores); choice limited to the `topk_group` best of `n_group` expert groups (a group's score: the sum of
  its two best biased scores); renormalised if norm_topk_prob; then × `routed_scaling_factor`.
- attention: multi-head latent attention (`LatentAttention`); the cache holds the kv_lora_rank latent and the
  rope key per token. `head_dim` is the rotary width (`qk_rope_head_dim`), as in transformers.
- rope: `default` or `yarn` (`YarnScaling`); yarn's `mscale_all_dim` also scales the softmax.
- layers below `first_k_dense_replace` (and those off `moe_layer_freq`) run a dense MLP of `intermediate_size`.
- shared experts: `n_shared_experts` × `moe_intermediate_size` wide, added to every token without a gate.

No I/O here: `ModelConfig.from_hf_dict` takes the parsed JSON (each family's keys are read in `configs/hf_config.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3"]
SUPPORTED_FAMILIES: tuple[str, ...] = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3")
QKNorm = Literal["none", "per_head", "full"]
Scoring = Literal["softmax", "sigmoid"]


class ConfigError(ValueError):
    """A config that cannot be served; the message names the field."""


@dataclass(frozen=True)
class LatentAttention:
    """Multi-head latent attention (DeepSeek-V2/V3): the shapes that replace q/k/v projections per head."""

    q_lora_rank: int | None  # None: one q_proj; else q_a_proj → norm → q_b_proj
    kv_lora_rank: int  # width of the compressed kv latent, the part of K and V that is cached
    qk_nope_head_dim: int  # per-head query/key dims without rope (expanded from the latent)
    qk_rope_head_dim: int  # per-head query dims with rope; the key's rope part is one vector shared by all heads
    v_head_dim: int
    rope_interleave: bool = True  # rope pairs are (x0, x1), (x2, x3), … instead of the two halves

    def __post_init__(self) -> None:
        for name in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"config field `{name}` must be > 0, got {getattr(self, name)}")
        if self.q_lora_rank is not None and self.q_lora_rank <= 0:
            raise ConfigError(f"config field `q_lora_rank` must be > 0 or null, got {self.q_lora_rank}")
        if self.qk_rope_head_dim % 2:
            raise ConfigError(f"config field `qk_rope_head_dim` must be even, got {self.qk_rope_head_dim}")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


@dataclass(frozen=True)
class YarnScaling:
    """`rope_parameters` of rope_type `yarn` (transformers' `_compute_yarn_parameters`)."""

    factor: float
    original_max_position_embeddings: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise ConfigError(f"config field `rope_parameters.factor` must be > 0, got {self.factor}")


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
    # diff with mixtral (deepseek_v3): the fields below; the defaults are every other family's behaviour.
    shared_expert_gated: bool = False  # qwen2_moe: the shared expert's output × sigmoid(gate(x))
    scoring: Scoring = "softmax"
    gate_score_bias: bool = False  # `e_score_correction_bias`: added for the choice only
    num_expert_groups: int = 1  # `n_group`
    topk_groups: int = 1  # `topk_group`
    routed_scaling_factor: float = 1.0
    mla: LatentAttention | None = None
    rope_yarn: YarnScaling | None = None
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
        groups = self.num_expert_groups
        if groups < 1 or self.num_experts % groups:
            raise ConfigError(f"config field `n_group` ({groups}) must divide the {self.num_experts} experts")
        if groups > 1 and self.num_experts // groups < 2:  # a group's score is the sum of its best two
            raise ConfigError(f"config field `n_group` ({groups}) leaves fewer than 2 experts per group")
        if not 1 <= self.topk_groups <= groups:
            raise ConfigError(f"config field `topk_group` ({self.topk_groups}) must be in [1, n_group={groups}]")
        if self.top_k > self.topk_groups * (self.num_experts // groups):
            raise ConfigError(f"`num_experts_per_tok` ({self.top_k}) exceeds the experts of `topk_group` "
                              f"({self.topk_groups}) groups")

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
        if self.mla is not None:
            m, nh = self.mla, self.num_heads
            q_proj = h * nh * m.qk_head_dim if m.q_lora_rank is None else m.q_lora_rank * (h + 1 + nh * m.qk_head_dim)
            attention = (q_proj + h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
                         + m.kv_lora_rank * nh * (m.qk_nope_head_dim + m.v_head_dim) + nh * m.v_head_dim * h)
        total = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        for sparse in self.sparse_layers:
            total += attention
            if sparse:
                total += e * 3 * h * i_moe + e * h + 3 * h * self.shared_expert_intermediate_size
            else:
                total += 3 * h * self.intermediate_size
        return total

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        """Parse a transformers `config.json` dict; raises ConfigError naming the bad field."""
        from switchyard.configs.hf_config import model_fields

        return cls(**model_fields(raw))
