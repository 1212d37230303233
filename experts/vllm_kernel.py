"""The optional "vllm" expert kernel: vLLM's fused-MoE op for the device the experts' weights are on.

    weights on cpu  → `vllm_cpu`  (vLLM's CPU op `cpu_fused_moe`, needs the CPU build vllm-cpu)
    weights on cuda → `vllm_cuda` (vLLM's Triton kernel `fused_experts`, needs vLLM's CUDA build)

Both compute what `compute.expert_forward` does (the torch kernel, the default and the reference). vllm is
imported only when this kernel is asked for. There is no fallback: asking for "vllm" and silently getting the
torch kernel would make benchmarks lie, so where vLLM's op for that device cannot run, `load_ops` raises
VllmUnavailable at start-up, in one line that says what to do.
"""

from __future__ import annotations

import torch

from switchyard.experts import vllm_cpu, vllm_cuda
from switchyard.experts.layout import LayerExperts
from switchyard.experts.vllm_errors import README_SECTION, VllmUnavailable

__all__ = ["README_SECTION", "VllmUnavailable", "load_ops", "prepack", "fused_moe"]


def _device_type(device: torch.device | str) -> str:
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        raise VllmUnavailable(f"expert_kernel 'vllm' runs on 'cpu' or 'cuda' weights, not {kind!r}; use "
                              f"expert_kernel 'torch'")
    return kind


def load_ops(device: torch.device | str = "cpu"):
    """Check, before any weight is read, that vLLM's op for `device` runs here; returns it."""
    return vllm_cuda.load() if _device_type(device) == "cuda" else vllm_cpu.load_ops()


def prepack(experts: LayerExperts) -> LayerExperts:
    """Once at load: the weights in the layout the op of their device wants."""
    if _device_type(experts.w13.device) == "cuda":
        vllm_cuda.load()
        return vllm_cuda.check_weights(experts)
    return vllm_cpu.prepack(experts)


def fused_moe(
    hidden: torch.Tensor,  # [T, H]
    local_ids: torch.Tensor,  # [T, k] row of the packed weights, -1 = skip
    weights: torch.Tensor,  # [T, k] gate weights
    packed: LayerExperts,  # from `prepack`
) -> torch.Tensor:  # [T, H]
    if packed.w13.device.type == "cuda":
        return vllm_cuda.fused_moe(hidden, local_ids, weights, packed)
    return vllm_cpu.fused_moe(hidden, local_ids, weights, packed)
