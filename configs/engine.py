"""How one engine (single process, or the cluster's router) runs: batch sizes, context length, dtype."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from switchyard.configs.model import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# What computes the routed experts: torch (`experts/compute.py`), or vLLM's CPU fused-MoE op (optional,
# `experts/vllm_kernel.py`).
ExpertKernel = Literal["torch", "vllm"]
EXPERT_KERNELS: tuple[ExpertKernel, ...] = ("torch", "vllm")


@dataclass(frozen=True)
class AdaptiveRouting:
    """Token-adaptive routing: per token, skip the routed experts that carry little of its gate weight.

    Applied after the family's gate, on each expert's share of the token's top-k weight (weight / sum of the k):
    - `threshold`: drop experts whose share is below `value`;
    - `cumulative`: keep the fewest experts, best first, whose shares add up to at least `value` (top-p);
    never fewer than `min_experts` (nor more than top_k). A dropped expert gets id -1 and weight 0, so no expert
    group computes it. The kept weights stay as the gate gave them; `renormalize` scales them back up to the
    token's total routed weight instead (measured worse: see `router/adaptive_routing.py`).
    """

    mode: Literal["threshold", "cumulative"]
    value: float
    min_experts: int = 1
    renormalize: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("threshold", "cumulative"):
            raise ConfigError(f"engine field `adaptive_routing.mode` must be 'threshold' or 'cumulative', "
                              f"got {self.mode!r}")
        if self.value is None or not 0.0 < self.value <= 1.0:
            raise ConfigError(f"engine field `adaptive_routing.value` must be in (0, 1], got {self.value}")
        if self.min_experts < 1:
            raise ConfigError(f"engine field `adaptive_routing.min_experts` must be >= 1, got {self.min_experts}")


@dataclass(frozen=True)
class EngineConfig:
    max_num_seqs: int = 32  # sequences decoded together (KV-cache slots)
    max_model_len: int = 1024  # prompt + output tokens of one sequence
    max_num_batched_tokens: int = 2048  # prompt tokens admitted in one prefill step
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    num_threads: int | None = None  # torch intra-op threads; None = torch's default
    adaptive_routing: AdaptiveRouting | None = None  # None: every token uses all top_k experts
    expert_kernel: ExpertKernel = "torch"  # of the experts this process holds

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_model_len", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"engine field `{name}` must be >= 1, got {getattr(self, name)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"engine field `dtype` must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.expert_kernel not in EXPERT_KERNELS:
            raise ConfigError(f"engine field `expert_kernel` must be one of {EXPERT_KERNELS}, "
                              f"got {self.expert_kernel!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]
