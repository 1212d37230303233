"""Random checkpoints for benchmarks, made once with transformers and cached on disk."""

from __future__ import annotations

import os
from pathlib import Path

_COMMON = dict(vocab_size=8192, hidden_size=384, num_hidden_layers=8, num_attention_heads=6,
               num_key_value_heads=2, head_dim=64, intermediate_size=1024, norm_topk_prob=True,
               max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=0)
# Both ~66M parameters, 57M of them in routed experts; the same expert bytes cut two ways.
PRESETS = {
    # fine-grained, the shape of OLMoE (64 experts, top-8) and Qwen3-MoE (128, top-8)
    "moe-64x8": dict(_COMMON, moe_intermediate_size=96, num_experts=64, num_experts_per_tok=8),
    # coarser, Mixtral-like ratio of experts to top-k
    "moe-32x4": dict(_COMMON, moe_intermediate_size=192, num_experts=32, num_experts_per_tok=4),
}


def cache_dir() -> Path:
    return Path(os.environ.get("SWITCHYARD_CACHE", Path.home() / ".cache" / "switchyard"))


def bench_checkpoint(preset: str = "moe-64x8") -> Path:
    """A random Qwen3-MoE checkpoint of `preset`, written by transformers (needs the `test` extra)."""
    path = cache_dir() / f"bench-{preset}"
    if (path / "config.json").is_file():
        return path
    try:
        import torch
        from transformers import AutoModelForCausalLM, Qwen3MoeConfig
    except ImportError as err:
        raise SystemExit("the benchmark model is made with transformers: pip install 'switchyard[test]'") from err
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(Qwen3MoeConfig(**PRESETS[preset]))
    model.save_pretrained(path)
    return path
