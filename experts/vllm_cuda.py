"""vLLM's CUDA fused-MoE kernel (the "vllm" expert kernel on CUDA weights): `compute.expert_forward` in one call.

    [LayerExperts on the GPU, as loaded] → per call: prepare_routing → vllm `fused_experts` (Triton):
        align tokens to experts in blocks → GEMM w13 → silu(gate) * up → GEMM w2 × gate weight → sum over k

Optional: it needs vLLM's CUDA build (`pip install vllm`, built for the installed torch) and a CUDA GPU; vllm
is imported only when this kernel is asked for. Not yet run on a GPU (docs/gpu.md).

What `fused_experts(hidden_states, w1, w2, topk_weights, topk_ids, ..., global_num_experts, expert_map)` wants,
from vLLM's source (`model_executor/layers/fused_moe/fused_moe.py`, `moe_align_block_size.py`):
- w1 [E, 2I, H] with the gate rows first and the up rows second (its `silu_and_mul` is silu(x[:I]) * x[I:]),
  w2 [E, H, I], both with unit stride on the last dimension: our `w13` / `w2` as loaded, no prepacking;
- a contiguous hidden_states [T, H] of the weights' dtype (float32, float16 or bfloat16);
- topk_ids [T, k] in [0, global_num_experts) (vLLM's own top-k gives int32, so do we) and topk_weights [T, k]
  float32, which it multiplies in after the second GEMM;
- expert_map [global_num_experts] maps an id to a row of w1/w2, -1 for an expert this rank does not hold: the
  kernel writes zeros for those rows (vLLM's expert parallelism). Our ids are already rows of the group's
  weights, -1 where the group does not hold the expert; -1 is outside the range `topk_ids` must be in, so it
  becomes one extra id, E, that the map sends to -1. No token is filtered out on the host (no GPU sync), and
  a token with no expert here gets zeros, as from the torch kernel.
"""

from __future__ import annotations

import functools

import torch

from switchyard.experts.layout import LayerExperts
from switchyard.experts.vllm_errors import GPU_DOC, VllmUnavailable


@functools.cache  # only a success is cached: a raised error is not
def load():
    """vLLM's `fused_experts`, or VllmUnavailable in one line saying what to do."""
    if not torch.cuda.is_available():
        raise VllmUnavailable(f"expert_kernel 'vllm' on a CUDA device needs a CUDA GPU, and torch "
                              f"{torch.__version__} sees none here (CUDA build: {torch.version.cuda}); put the "
                              f"experts on 'cpu' or use expert_kernel 'torch'")
    try:
        from vllm.model_executor.layers.fused_moe import fused_experts
        from vllm.platforms import current_platform
    except Exception as err:  # ImportError, or OSError/RuntimeError from a build that does not match torch
        raise VllmUnavailable(f"expert_kernel 'vllm' on CUDA needs vLLM's CUDA build, which cannot be imported "
                              f"here ({type(err).__name__}: {err}); `pip install vllm` built for torch "
                              f"{torch.__version__} ({GPU_DOC}), or use expert_kernel 'torch'") from err
    if not current_platform.is_cuda_alike():
        raise VllmUnavailable(f"expert_kernel 'vllm' on CUDA: the installed vllm is not a CUDA build (its platform "
                              f"is {type(current_platform).__name__}); install vLLM's CUDA build ({GPU_DOC}), or "
                              f"use expert_kernel 'torch'")
    return fused_experts


def check_weights(experts: LayerExperts) -> LayerExperts:
    """The weights as they are: the kernel reads w13 [n, 2I, H] and w2 [n, H, I] in place."""
    for name in ("w13", "w2"):
        weight = getattr(experts, name)
        if weight.stride(-1) != 1:
            raise ValueError(f"layer {experts.layer}: {name} needs unit stride on its last dimension for vLLM's "
                             f"kernel, got strides {weight.stride()}")
    return experts


def prepare_routing(
    local_ids: torch.Tensor,  # [T, k] row of the group's weights, -1 = not here
    weights: torch.Tensor,  # [T, k] gate weights
    num_held: int,  # n, rows of the group's weights
) -> tuple[torch.Tensor, torch.Tensor]:  # topk_ids [T, k] int32 in [0, n], topk_weights [T, k] float32
    """Our routing in `fused_experts`' terms: -1 becomes the extra id n (which `expert_map` sends to -1), at
    weight 0 so that nothing of it could reach the sum even if a kernel computed it."""
    held = local_ids >= 0
    topk_ids = torch.where(held, local_ids, num_held).to(torch.int32)
    topk_weights = torch.where(held, weights.to(torch.float32), 0.0)
    return topk_ids, topk_weights


def expert_map(num_held: int, device: torch.device | str = "cpu") -> torch.Tensor:  # [n + 1] int32
    """Ids 0..n-1 are the group's rows; id n (a slot with no expert here) maps to -1."""
    table = torch.full((num_held + 1,), -1, dtype=torch.int32, device=device)
    table[:num_held] = torch.arange(num_held, dtype=torch.int32, device=device)
    return table


@functools.cache
def _cached_expert_map(num_held: int, device: torch.device) -> torch.Tensor:
    return expert_map(num_held, device)


def fused_moe(
    hidden: torch.Tensor,  # [T, H] on the weights' device and dtype
    local_ids: torch.Tensor,  # [T, k] row of the weights, -1 = skip
    weights: torch.Tensor,  # [T, k] gate weights
    experts: LayerExperts,  # on CUDA, from `check_weights`
) -> torch.Tensor:  # [T, H]
    num_held = experts.w13.shape[0]
    if hidden.shape[0] == 0:
        return torch.zeros_like(hidden)
    topk_ids, topk_weights = prepare_routing(local_ids.to(hidden.device), weights.to(hidden.device), num_held)
    return load()(hidden_states=hidden.contiguous(), w1=experts.w13, w2=experts.w2, topk_weights=topk_weights,
                  topk_ids=topk_ids, global_num_experts=num_held + 1,
                  expert_map=_cached_expert_map(num_held, hidden.device))
