"""Decode measurements shared by the single-process and cluster benchmarks."""

from __future__ import annotations

import asyncio
import time

import torch
from switchyard.router.dense_model import DenseModel, Routing
from switchyard.router.engine import StepStats
from switchyard.router.sampling import SamplingParams


def greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)


def decode_summary(steps: list[StepStats], seconds: float) -> dict:
    decode = [s for s in steps if s.kind == "decode"]
    decode_seconds = sum(s.seconds for s in decode)
    tokens = sum(s.num_seqs for s in decode)
    return {"decode_tok_s": tokens / decode_seconds if decode_seconds else 0.0,
            "decode_ms_per_step": 1000 * decode_seconds / max(1, len(decode)),
            "prefill_ms": 1000 * sum(s.seconds for s in steps if s.kind == "prefill"),
            "total_s": seconds}


async def run_batch(async_engine, prompts: list[list[int]], max_tokens: int) -> float:
    """All prompts at once through an AsyncEngine; wall seconds until the last finishes."""
    async def one(prompt):
        async for _ in async_engine.generate(async_engine.validate(prompt, greedy(max_tokens))):
            pass

    start = time.perf_counter()
    await asyncio.gather(*(one(p) for p in prompts))
    return time.perf_counter() - start


def time_round_trip(experts, model: DenseModel, num_tokens: int, repeats: int) -> float:
    cfg = model.config
    layer = cfg.moe_layers[0]
    hidden = torch.randn(num_tokens, cfg.hidden_size, dtype=model.dtype)
    routing = Routing(torch.stack([torch.randperm(cfg.num_experts)[:cfg.top_k] for _ in range(num_tokens)]),
                      torch.full((num_tokens, cfg.top_k), 1.0 / cfg.top_k))
    experts.wait(experts.submit(layer, hidden, routing))  # warm
    start = time.perf_counter()
    for _ in range(repeats):
        experts.wait(experts.submit(layer, hidden, routing))
    return (time.perf_counter() - start) / repeats
