"""How one engine (single process, or the cluster's router) runs: batch sizes, context length, device, dtype,
and the memory of its KV cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from switchyard.configs.model import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DType = Literal["auto", "float32", "bfloat16", "float16"]


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """`auto`: bfloat16 on a GPU (its tensor cores' format, half the memory), float32 elsewhere (the CPU
    default and the reference the numerics tests compare against)."""
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return DTYPES[dtype]


def check_device_name(field: str, device: str) -> None:
    """`cpu`, `cuda` or `cuda:N` (`meta` too: shapes only, for tests). Whether CUDA is there is checked where
    the weights are loaded (`router/devices.py`): the node that validates a config may have no GPU."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"engine field `{field}` must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if kind not in ("cpu", "cuda", "meta"):
        raise ConfigError(f"engine field `{field}` must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def parse_bytes(value: int | str | None) -> int | None:
    """A memory size: an int of bytes, or a string like "4GiB", "512MiB", "2GB", "1e9"."""
    if value is None or isinstance(value, int):
        return value
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("kmgtib")
    unit = text[len(number):]
    try:
        amount = float(number)
    except ValueError:
        amount = None
    if amount is None or unit not in units or amount < 0:
        raise ConfigError(f"a memory size must be bytes or a number with a unit (KiB, MiB, GiB, GB, ...), "
                          f"got {value!r}")
    return int(amount * units[unit])
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
    device: str = "cpu"  # of the dense weights, the KV cache and sampling (and the experts in one process)
    dtype: DType = "auto"  # auto: bfloat16 on a GPU, float32 on the CPU
    num_threads: int | None = None  # torch intra-op threads; None = torch's default
    adaptive_routing: AdaptiveRouting | None = None  # None: every token uses all top_k experts
    expert_kernel: ExpertKernel = "torch"  # of the experts this process holds
    # The KV cache is a pool of blocks of `block_size` tokens (router/kv_cache.py). Its size, in this order:
    # `kv_cache_memory` bytes; or, on a GPU, what keeps the device's whole use under `gpu_memory_utilization`
    # of its memory once the weights are loaded; or else room for max_num_seqs sequences at max_model_len.
    block_size: int = 16
    kv_cache_memory: int | None = None
    gpu_memory_utilization: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_model_len", "max_num_batched_tokens", "block_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"engine field `{name}` must be >= 1, got {getattr(self, name)}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ConfigError(f"engine field `dtype` must be 'auto' or one of {sorted(DTYPES)}, got {self.dtype!r}")
        check_device_name("device", self.device)
        if self.kv_cache_memory is not None and self.kv_cache_memory < 1:
            raise ConfigError(f"engine field `kv_cache_memory` must be a positive number of bytes, "
                              f"got {self.kv_cache_memory}")
        if self.gpu_memory_utilization is not None:
            if not 0.0 < self.gpu_memory_utilization <= 1.0:
                raise ConfigError(f"engine field `gpu_memory_utilization` must be in (0, 1], "
                                  f"got {self.gpu_memory_utilization}")
            if torch.device(self.device).type != "cuda":
                raise ConfigError("engine field `gpu_memory_utilization` sizes the KV cache from a GPU's memory: "
                                  f"it needs device 'cuda', not {self.device!r}; use kv_cache_memory instead")
            if self.kv_cache_memory is not None:
                raise ConfigError("set one of engine fields `kv_cache_memory` and `gpu_memory_utilization`, "
                                  "not both")
        if self.expert_kernel not in EXPERT_KERNELS:
            raise ConfigError(f"engine field `expert_kernel` must be one of {EXPERT_KERNELS}, "
                              f"got {self.expert_kernel!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype, self.device)
