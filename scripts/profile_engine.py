"""Where the single-process engine's decode time goes: a torch.profiler table over a batched greedy run.

    python scripts/profile_engine.py [--preset moe-64x8] [--batch 32] [--expert-kernel torch|vllm] [--dtype float32]

Uses the same random benchmark checkpoint as `switchyard bench engine`.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from switchyard.cluster.bench.engine import random_prompts
from switchyard.cluster.bench.models import bench_checkpoint
from switchyard.configs.engine import EngineConfig
from switchyard.router.engine import Engine
from switchyard.router.sampling import SamplingParams


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="moe-64x8", choices=["moe-64x8", "moe-32x4"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--expert-kernel", default="torch", choices=["torch", "vllm"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, default=20, help="operators to list")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    path = bench_checkpoint(args.preset)
    engine = Engine.from_pretrained(path, EngineConfig(
        max_num_seqs=args.batch, max_model_len=args.prompt_len * 2 + args.max_tokens + 8,
        expert_kernel=args.expert_kernel, dtype=args.dtype))
    prompts = random_prompts(args.batch, args.prompt_len, engine.model.config.vocab_size)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True)
    engine.generate(prompts[:2], SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))  # warm up
    start = time.perf_counter()
    engine.generate(prompts, params)
    print(f"{args.batch} x {args.max_tokens} tokens in {time.perf_counter() - start:.2f} s unprofiled "
          f"({args.preset}, {args.expert_kernel} kernel, {args.dtype}, {args.threads} threads)")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        engine.generate(prompts, params)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
