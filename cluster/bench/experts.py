"""The expert kernels on the same inputs: torch's three schedules and, where
installed, vLLM's CPU fused-MoE op."""

from __future__ import annotations

import time

import torch
from switchyard.cluster.bench.kernels import chosen_kernels, kernels_flag
from switchyard.cluster.bench.table import format_table
from switchyard.experts.compute import expert_forward
from switchyard.experts.layout import LayerExperts


def _time(fn, repeats: int = 20) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def run(kernels: list[str] = ("torch",), hidden: int = 384, inter: int = 192, num_experts: int = 32,
        top_k: int = 4) -> tuple[list[str], list[list]]:
    """Headers and rows of milliseconds per call; the defaults are the `moe-32x4` bench model's layer."""
    w13 = torch.randn(num_experts, 2 * inter, hidden) * 0.05
    w2 = torch.randn(num_experts, hidden, inter) * 0.05
    headers = ["tokens", "experts", "top-k"]
    if "torch" in kernels:
        headers += ["grouped ms", "padded ms", "segmented ms", "padded/grouped"]
    if "vllm" in kernels:
        from switchyard.experts import vllm_kernel

        packed = vllm_kernel.prepack(LayerExperts(0, tuple(range(num_experts)), w13, w2))
        headers += ["vllm ms"] + ["best torch/vllm"] * ("torch" in kernels)
    rows = []
    for tokens in (1, 8, 32, 128, 512):
        x = torch.randn(tokens, hidden)
        ids = torch.stack([torch.randperm(num_experts)[:top_k] for _ in range(tokens)])
        weights = torch.rand(tokens, top_k)
        row = [tokens, num_experts, top_k]
        if "torch" in kernels:
            grouped, padded, segmented = (_time(lambda: expert_forward(x, ids, weights, w13, w2, schedule=s))
                                          for s in ("grouped", "padded", "segmented"))
            row += [grouped, padded, segmented, f"{padded / grouped:.2f}"]
        if "vllm" in kernels:
            fused = _time(lambda: vllm_kernel.fused_moe(x, ids, weights, packed))
            row += [fused] + ([f"{min(grouped, padded, segmented) / fused:.2f}x"] if "torch" in kernels else [])
        rows.append(row)
    return headers, rows


def register(benchmarks) -> None:
    """Add `switchyard bench experts` to the `bench` subparsers."""
    p = benchmarks.add_parser("experts", help="expert kernels: torch's padded bmm vs per-expert GEMMs, and vLLM's op")
    p.add_argument("--preset", default="moe-32x4", choices=["moe-64x8", "moe-32x4"],
                   help="one MoE layer of this bench model's shape, random weights")
    p.add_argument("--threads", type=int, default=2)
    kernels_flag(p)
    p.set_defaults(func=main)


def main(args) -> int:
    from switchyard.cluster.bench.models import PRESETS

    torch.set_num_threads(args.threads)
    kernels = chosen_kernels(args)
    shape = PRESETS[args.preset]
    print(f"one layer of {args.preset}: hidden {shape['hidden_size']}, intermediate {shape['moe_intermediate_size']}; "
          f"ms per call, {args.threads} threads")
    print(format_table(*run(kernels, shape["hidden_size"], shape["moe_intermediate_size"], shape["num_experts"],
                            shape["num_experts_per_tok"])))
    return 0
