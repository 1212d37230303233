"""`switchyard bench kv-cache`: what the paged KV cache buys at a fixed memory budget, and what preemption costs.

One batch of requests runs to completion under each setup, in one process, on the same model:
- `reserved`: the memory cut into whole max_model_len sequences, as a slot-per-sequence cache would (so at
  most budget / max_model_len sequences run at once);
- `paged`: the same bytes as blocks, sequences admitted while blocks last;
- `paged, 1/4`: a quarter of the bytes, so sequences must be preempted and recomputed.
Each row: the cache's bytes, the most sequences running at once, preemptions, output tok/s and its ratio to
`reserved`, and whether the greedy tokens equal the first row's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from switchyard.cluster.bench.table import format_table
from switchyard.configs.engine import EngineConfig
from switchyard.experts.checkpoint import Checkpoint
from switchyard.router.engine import Engine
from switchyard.router.kv_cache import bytes_per_token
from switchyard.router.sampling import SamplingParams


@dataclass
class Row:
    setup: str
    cache_bytes: int
    most_running: int
    preemptions: int
    tokens_per_s: float
    same_tokens: bool


def run(model: Path, num_requests: int, prompt_len: int, max_tokens: int, max_model_len: int,
        full_sequences: int, block_size: int = 16) -> list[Row]:
    if full_sequences < 4:
        raise SystemExit("--full-sequences must be at least 4: the last setup gets a quarter of the memory, "
                         "which must hold one sequence of --max-model-len")
    config = Checkpoint.open(model).config
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, config.vocab_size, (prompt_len,), generator=gen).tolist() for _ in range(num_requests)]
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    budget = full_sequences * max_model_len * bytes_per_token(config, EngineConfig().torch_dtype)
    setups = [("reserved (slot per sequence)", EngineConfig(max_num_seqs=full_sequences, max_model_len=max_model_len,
                                                            block_size=block_size, kv_cache_memory=budget)),
              ("paged", EngineConfig(max_num_seqs=num_requests, max_model_len=max_model_len, block_size=block_size,
                                     kv_cache_memory=budget)),
              ("paged, 1/4 of the memory", EngineConfig(max_num_seqs=num_requests, max_model_len=max_model_len,
                                                        block_size=block_size, kv_cache_memory=budget // 4))]
    rows, first = [], None
    for name, config in setups:
        engine = Engine.from_pretrained(model, config)
        engine.generate(prompts[:2], SamplingParams(max_tokens=2, temperature=0.0))  # warm-up
        most = 0

        def watch(_outputs):
            nonlocal most
            most = max(most, len(engine.scheduler.running))

        start = time.perf_counter()
        outputs = engine.generate(prompts, params, on_step=watch)
        seconds = time.perf_counter() - start
        tokens = [o.token_ids for o in outputs]
        first = first or tokens
        rows.append(Row(name, engine.cache.nbytes(), most, engine.scheduler.num_preemptions,
                        sum(map(len, tokens)) / seconds, tokens == first))
    return rows


def table(rows: list[Row]) -> tuple[list[str], list[list]]:
    base = rows[0].tokens_per_s
    return (["setup", "cache MiB", "most running", "preemptions", "tok/s", "vs reserved", "same tokens"],
            [[r.setup, f"{r.cache_bytes / 2**20:.1f}", r.most_running, r.preemptions, f"{r.tokens_per_s:.0f}",
              f"{r.tokens_per_s / base:.2f}x", "yes" if r.same_tokens else "NO"] for r in rows])


def register(benchmarks) -> None:
    """Add `switchyard bench kv-cache` to the `bench` subparsers."""
    p = benchmarks.add_parser("kv-cache", help="the paged KV cache at a fixed memory budget: sequences admitted, "
                                          "preemptions and tok/s against a slot-per-sequence cache")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64, help="new tokens per request")
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--full-sequences", type=int, default=8,
                   help="the memory budget, in sequences of --max-model-len")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=main)


def main(args) -> int:
    from switchyard.configs.defaults import resolve_model

    torch.set_num_threads(args.threads)
    model = resolve_model(args.model)
    print(f"model: {model}; {args.requests} requests of {args.prompt_len} + {args.max_tokens} tokens, greedy; "
          f"memory for {args.full_sequences} sequences of {args.max_model_len} tokens; {args.threads} threads",
          flush=True)
    rows = run(model, args.requests, args.prompt_len, args.max_tokens, args.max_model_len,
                        args.full_sequences)
    print(format_table(*table(rows)))
    return 0 if all(r.same_tokens for r in rows) else 1
