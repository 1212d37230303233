"""How one engine (single process, or the cluster's router) runs: batch sizes, context length, dtype."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from switchyard.configs.model import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class EngineConfig:
    max_num_seqs: int = 32  # sequences decoded together (KV-cache slots)
    max_model_len: int = 1024  # prompt + output tokens of one sequence
    max_num_batched_tokens: int = 2048  # prompt tokens admitted in one prefill step
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    expert_kernel: Literal["torch", "vllm"] = "torch"
    num_threads: int | None = None  # torch intra-op threads; None = torch's default

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_model_len", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"engine field `{name}` must be >= 1, got {getattr(self, name)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"engine field `dtype` must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.expert_kernel not in ("torch", "vllm"):
            raise ConfigError(f"engine field `expert_kernel` must be 'torch' or 'vllm', got {self.expert_kernel!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]
