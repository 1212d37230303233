"""Single-process engine against transformers' `generate`, same checkpoint, same prompts, one run; the engine
once per expert kernel (torch, vllm)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from switchyard.cluster.bench.kernels import chosen_kernels, kernels_flag
from switchyard.cluster.bench.table import format_table
from switchyard.configs.engine import EngineConfig
from switchyard.router.engine import Engine
from switchyard.router.sampling import SamplingParams


@dataclass
class Throughput:
    decode_tok_s: float  # batch * (N - 1) / (T(N) - T(1))
    end_to_end_tok_s: float  # batch * N / T(N), prefill included


@dataclass
class EngineBenchRow:
    batch: int
    transformers: Throughput
    switchyard: dict[str, Throughput]  # by expert kernel
    identical: dict[str, int]  # by expert kernel: sequences whose greedy tokens equal transformers' exactly


def random_prompts(batch: int, prompt_len: int, vocab: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    # lengths vary ±25% so that batching handles ragged prompts, as in serving
    lengths = torch.randint(max(1, prompt_len * 3 // 4), prompt_len * 5 // 4 + 1, (batch,), generator=gen)
    return [torch.randint(3, vocab, (int(n),), generator=gen).tolist() for n in lengths]


def left_padded(prompts: list[list[int]], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask [B, width] of a left-padded batch, as `generate` wants it."""
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def transformers_generate(model, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    ids, mask = left_padded(prompts, model.device)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=0)
    return out[:, ids.shape[1]:].tolist()


def run(model_path: Path, batches: list[int], new_tokens: int, prompt_len: int, kernels: list[str] = ("torch",),
        log=print, dtype: str = "float32") -> list[EngineBenchRow]:
    """Both sides compute in `dtype`. In float32 the greedy tokens must match; in lower precision, rounding
    differs between implementations and sequences drift apart after a while, so the table counts them."""
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).eval()
    reference.generation_config.eos_token_id = None  # both sides generate exactly new_tokens
    engines = {kernel: Engine.from_pretrained(model_path, EngineConfig(
        max_num_seqs=max(batches), max_model_len=prompt_len * 2 + new_tokens + 8, expert_kernel=kernel, dtype=dtype))
        for kernel in kernels}
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    vocab = reference.config.vocab_size
    warm = random_prompts(2, 8, vocab, seed=99)
    transformers_generate(reference, warm, 4)
    for engine in engines.values():
        engine.generate(warm, SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))

    def timed(fn):
        start = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - start

    one = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
    rows = []
    for batch in batches:
        prompts = random_prompts(batch, prompt_len, vocab)
        log(f"batch {batch}: transformers generate ...")
        _, hf_prefill = timed(lambda: transformers_generate(reference, prompts, 1))
        expected, hf_total = timed(lambda: transformers_generate(reference, prompts, new_tokens))
        decode_tokens = batch * (new_tokens - 1)

        def throughput(prefill_s: float, total_s: float) -> Throughput:
            return Throughput(decode_tokens / (total_s - prefill_s), batch * new_tokens / total_s)

        row = EngineBenchRow(batch, throughput(hf_prefill, hf_total), {}, {})
        for kernel, engine in engines.items():
            log(f"batch {batch}: switchyard, {kernel} expert kernel ...")
            _, ours_prefill = timed(lambda: engine.generate(prompts, one))
            outputs, ours_total = timed(lambda: engine.generate(prompts, params))
            row.switchyard[kernel] = throughput(ours_prefill, ours_total)
            row.identical[kernel] = sum(list(o.token_ids) == e for o, e in zip(outputs, expected))
        rows.append(row)
    return rows


def log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def table(rows: list[EngineBenchRow], kernels: list[str]) -> tuple[list[str], list[list]]:
    """Headers and rows: decode tok/s of transformers and of each kernel, each kernel's ratio to transformers
    (and vllm's to torch when both ran), end-to-end ratios, and how many sequences had transformers' tokens."""
    headers = ["batch", "transformers tok/s"] + [f"{k} tok/s" for k in kernels] + [f"{k}/transformers" for k in kernels]
    both = "torch" in kernels and "vllm" in kernels
    headers += ["vllm/torch"] * both + [f"{k}/transformers end-to-end" for k in kernels]
    headers += [f"{k}: same tokens" for k in kernels]
    out = []
    for r in rows:
        ours = [r.switchyard[k] for k in kernels]
        line = [r.batch, r.transformers.decode_tok_s] + [t.decode_tok_s for t in ours]
        line += [f"{t.decode_tok_s / r.transformers.decode_tok_s:.2f}x" for t in ours]
        if both:
            line.append(f"{r.switchyard['vllm'].decode_tok_s / r.switchyard['torch'].decode_tok_s:.2f}x")
        line += [f"{t.end_to_end_tok_s / r.transformers.end_to_end_tok_s:.2f}x" for t in ours]
        line += [f"{r.identical[k]}/{r.batch}" for k in kernels]
        out.append(line)
    return headers, out


def register(benchmarks) -> None:
    """Add `switchyard bench engine` to the `bench` subparsers."""
    p = benchmarks.add_parser("engine", help="single-process engine (per expert kernel) vs transformers generate")
    p.add_argument("--model", default=None, help="model folder (default: a random --preset model, made once "
                                                 "with transformers and cached)")
    p.add_argument("--preset", default="moe-64x8", choices=["moe-64x8", "moe-32x4"],
                   help="66M-parameter Qwen3-MoE: 64 experts top-8 (fine-grained) or 32 experts top-4")
    p.add_argument("--batch", type=int, action="append", help="batch sizes (default: 1 and 32)")
    p.add_argument("--max-tokens", type=int, default=64, help="new tokens per sequence")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="both sides compute in this dtype (greedy tokens must match only in float32)")
    kernels_flag(p)
    p.set_defaults(func=main)


def main(args) -> int:
    from pathlib import Path

    from switchyard.cluster.bench.models import bench_checkpoint
    from switchyard.experts.checkpoint import Checkpoint

    torch.set_num_threads(args.threads)
    path = Path(args.model) if args.model else bench_checkpoint(args.preset)
    cfg = Checkpoint.open(path).config
    print(f"model: {path} ({cfg.family}, {cfg.num_parameters / 1e6:.1f}M parameters, {cfg.num_experts} experts "
          f"top-{cfg.top_k}); {args.max_tokens} new tokens per sequence, greedy; {args.threads} threads; {args.dtype}")
    kernels = chosen_kernels(args)
    rows = run(path, args.batch or [1, 32], args.max_tokens, args.prompt_len, kernels, log_to_stderr,
                      args.dtype)
    print("decode tok/s (ratios: higher is faster for the first named)")
    print(format_table(*table(rows, kernels)))
    exact = all(n == r.batch for r in rows for n in r.identical.values())
    return 0 if exact or args.dtype != "float32" else 1
