"""The two expert-compute schedules on the same inputs: where does padding stop paying?"""

from __future__ import annotations

import time

import torch

from switchyard.experts.compute import expert_forward


def _time(fn, repeats: int = 20) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def run(hidden: int = 384, inter: int = 192, num_experts: int = 32, top_k: int = 4) -> list[list]:
    w13 = torch.randn(num_experts, 2 * inter, hidden) * 0.05
    w2 = torch.randn(num_experts, hidden, inter) * 0.05
    rows = []
    for tokens in (1, 8, 32, 128, 512):
        x = torch.randn(tokens, hidden)
        ids = torch.stack([torch.randperm(num_experts)[:top_k] for _ in range(tokens)])
        weights = torch.rand(tokens, top_k)
        padded, segmented = (_time(lambda: expert_forward(x, ids, weights, w13, w2, schedule=s))
                             for s in ("padded", "segmented"))
        rows.append([tokens, num_experts, top_k, padded, segmented, f"{padded / segmented:.2f}"])
    return rows
