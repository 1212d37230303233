"""What one decode token costs a model, per layer: parameters read, FLOPs, KV-cache bytes, dispatch bytes.

Derived from a `config.json` through `switchyard.configs.model.ModelConfig` (every family Switchyard serves).
Counts are per token and per layer; the performance model (`performance.py`) multiplies them by the batch.

- attention (GQA): q/k/v/o projections; per cached position 2·heads·head_dim multiply-adds for QK and as
  many for PV; the cache holds K and V of the kv heads.
- attention (MLA, deepseek_v3), in the absorbed form every decode kernel uses (FlashMLA): the projections
  (q_a, q_b, kv_a, kv_b, o) once per token, and per cached position the scores against the latent plus the
  rope key (kv_lora_rank + qk_rope_head_dim) and the values from the latent (kv_lora_rank), for every head;
  the cache holds kv_lora_rank + qk_rope_head_dim per token and layer.
- a routed expert, a shared expert, a dense MLP: gate, up and down, 3·hidden·width parameters.

Weights are 8-bit where the checkpoint says so (`quantization_config` with an fp8 method, as DeepSeek-V3 ships),
else 16-bit; the KV cache and the activations on the wire are 16-bit unless stated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from switchyard.configs.model import ModelConfig


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden_size: int
    vocab_size: int
    num_experts: int
    top_k: int
    num_moe_layers: int
    num_dense_layers: int
    attention_params: int  # per layer
    attention_flops_per_position: int  # per token, layer and cached position (QK + PV, 2 FLOPs per MAC)
    kv_elements_per_token: int  # per layer
    expert_params: int  # one routed expert of one layer
    shared_expert_params: int  # per MoE layer, all shared experts together (0 if none)
    dense_mlp_params: int  # per dense layer
    gate_params: int  # per MoE layer
    weight_bytes: float = 2.0  # bytes per parameter
    kv_bytes: float = 2.0  # bytes per cached element
    activation_bytes: float = 2.0  # bytes per element sent to an expert group and back

    @property
    def num_layers(self) -> int:
        return self.num_moe_layers + self.num_dense_layers

    @property
    def lm_head_params(self) -> int:
        return self.hidden_size * self.vocab_size

    @property
    def expert_bytes_all_layers(self) -> float:
        """All routed experts of the model, in bytes: what the expert groups hold between them."""
        return self.num_experts * self.num_moe_layers * self.expert_params * self.weight_bytes

    @property
    def dense_bytes(self) -> float:
        """Everything but the routed experts (attention, shared experts, dense MLPs, gates, embeddings, head)."""
        per_moe = self.attention_params + self.shared_expert_params + self.gate_params
        per_dense = self.attention_params + self.dense_mlp_params
        params = self.num_moe_layers * per_moe + self.num_dense_layers * per_dense + 2 * self.lm_head_params
        return params * self.weight_bytes

    def kv_bytes_per_token(self) -> float:
        """KV cache of one token over all layers."""
        return self.kv_elements_per_token * self.kv_bytes * self.num_layers


def shape_from_config(config: ModelConfig, name: str = "", weight_bytes: float = 2.0, kv_bytes: float = 2.0,
                      activation_bytes: float = 2.0) -> ModelShape:
    h = config.hidden_size
    if config.mla is not None:
        m = config.mla
        nh = config.num_heads
        q = h * nh * m.qk_head_dim if m.q_lora_rank is None else h * m.q_lora_rank + m.q_lora_rank * nh * m.qk_head_dim
        kv_a = h * (m.kv_lora_rank + m.qk_rope_head_dim)
        kv_b = m.kv_lora_rank * nh * (m.qk_nope_head_dim + m.v_head_dim)
        attention = q + kv_a + kv_b + nh * m.v_head_dim * h
        per_position = 2 * nh * (2 * m.kv_lora_rank + m.qk_rope_head_dim)
        kv_elements = m.kv_lora_rank + m.qk_rope_head_dim
    else:
        hd, nh, nkv = config.head_dim, config.num_heads, config.num_kv_heads
        attention = h * (nh + 2 * nkv) * hd + nh * hd * h
        per_position = 2 * 2 * nh * hd
        kv_elements = 2 * nkv * hd
    moe = len(config.moe_layers)
    return ModelShape(
        name=name or config.architecture or config.family,
        hidden_size=h, vocab_size=config.vocab_size, num_experts=config.num_experts, top_k=config.top_k,
        num_moe_layers=moe, num_dense_layers=config.num_layers - moe,
        attention_params=attention, attention_flops_per_position=per_position, kv_elements_per_token=kv_elements,
        expert_params=3 * h * config.moe_intermediate_size,
        shared_expert_params=3 * h * config.shared_expert_intermediate_size,
        dense_mlp_params=3 * h * config.intermediate_size,
        gate_params=h * config.num_experts,
        weight_bytes=weight_bytes, kv_bytes=kv_bytes, activation_bytes=activation_bytes,
    )


def checkpoint_weight_bytes(raw: dict) -> float:
    """Bytes per parameter of the checkpoint as published: 1 for an fp8 `quantization_config`, else 2 (bf16)
    or 4 (float32)."""
    quant = raw.get("quantization_config") or {}
    if str(quant.get("quant_method", "")).lower() == "fp8":
        return 1.0
    dtype = str(raw.get("dtype") or raw.get("torch_dtype") or "bfloat16")
    return 4.0 if dtype == "float32" else 2.0


def load_shape(path: str | Path, weight_bytes: float | None = None, kv_bytes: float = 2.0) -> ModelShape:
    """A model folder or its config.json -> ModelShape. The serving engine refuses quantised checkpoints; the
    planner only needs the bytes per weight, so `quantization_config` is read here and left out of the parse."""
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    raw = json.loads(file.read_text())
    bytes_per_weight = checkpoint_weight_bytes(raw) if weight_bytes is None else weight_bytes
    parsed = {k: v for k, v in raw.items() if k != "quantization_config"}
    name = path.name if path.is_dir() else file.stem
    activation_bytes = 4.0 if bytes_per_weight == 4.0 else 2.0  # a float32 model sends float32 activations
    return shape_from_config(ModelConfig.from_hf_dict(parsed), name, bytes_per_weight,
                             4.0 if bytes_per_weight == 4.0 else kv_bytes, activation_bytes)


def reference_model(name: str) -> Path:
    """`deepseek-v3`, `qwen3-235b-a22b`, `mixtral-8x22b`: the public configs shipped in configs/reference_models."""
    from switchyard.configs import defaults

    folder = Path(defaults.__file__).resolve().parent / "reference_models"
    path = folder / f"{name.lower()}.json"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.json"))
        raise SystemExit(f"no reference model {name!r}; shipped: {known}, or pass a config.json / model folder")
    return path
