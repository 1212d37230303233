"""Decode tok/s of Switchyard's engine against transformers' `generate`, same checkpoint, same device, one run.

    python scripts/gpu_decode_bench.py --model DIR --device cuda [--batches 1,32,128] [--json OUT.json]
    python scripts/gpu_decode_bench.py --device cpu --batches 1,4 --new-tokens 8     # the built-in model, on CPU

Both sides decode the same random prompts greedily for exactly --new-tokens tokens (no EOS, no penalties), in
the same dtype (`auto`: bfloat16 on cuda, float32 on cpu), one process, every expert local. Decode tok/s is
batch × (N − 1) / (T(N) − T(1)): the time of a run of N tokens less that of a run of 1 (the prefill), as
`switchyard bench engine` measures it. Each side is warmed up first (CUDA context, cuBLAS, Triton). Prints a
Markdown table with the ratios; `--json` writes the rows too. Timing is of this one run: no repeats.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from switchyard.cluster.bench.engine import random_prompts, transformers_generate
from switchyard.configs.defaults import resolve_model
from switchyard.configs.engine import EngineConfig
from switchyard.router.engine import Engine
from switchyard.router.sampling import SamplingParams


@dataclass
class Row:
    batch: int
    transformers_tok_s: float
    switchyard_tok_s: float
    ratio: float  # switchyard / transformers
    same_tokens: int  # sequences whose greedy tokens equal transformers' exactly (expected in float32 only)


def resolve_dtype(dtype: str, device: str) -> str:
    if dtype != "auto":
        return dtype
    return "bfloat16" if torch.device(device).type == "cuda" else "float32"


def engine_config(device: str, dtype: str, max_num_seqs: int, max_model_len: int, expert_kernel: str,
                  kv_cache_memory: int | None) -> EngineConfig:
    fields = dict(max_num_seqs=max_num_seqs, max_model_len=max_model_len, dtype=dtype, expert_kernel=expert_kernel)
    known = EngineConfig.__dataclass_fields__
    if "device" in known:
        fields["device"] = device
    elif torch.device(device).type != "cpu":
        raise SystemExit(f"--device {device}: this Switchyard's EngineConfig has no `device` yet (issue #13)")
    if kv_cache_memory is not None:
        if "kv_cache_memory" not in known:
            raise SystemExit("--kv-cache-memory: this Switchyard's EngineConfig has no `kv_cache_memory` yet")
        fields["kv_cache_memory"] = kv_cache_memory
    return EngineConfig(**fields)


def load_transformers(path: Path, device: str, dtype: str):
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval().to(device)
    # plain greedy for exactly new_tokens: none of the checkpoint's sampling defaults or penalties
    model.generation_config = GenerationConfig(eos_token_id=None, pad_token_id=0, do_sample=False)
    return model


def timed(fn, device: str):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def run(path: Path, device: str, dtype: str, batches: list[int], new_tokens: int, prompt_len: int,
        expert_kernel: str = "torch", kv_cache_memory: int | None = None, log=print) -> list[Row]:
    if new_tokens < 2:
        raise SystemExit("--new-tokens must be >= 2 (decode time is T(N) - T(1))")
    reference = load_transformers(path, device, dtype)
    vocab = reference.config.vocab_size
    engine = Engine.from_pretrained(path, engine_config(device, dtype, max(batches), prompt_len * 5 // 4 + new_tokens
                                                        + 8, expert_kernel, kv_cache_memory))
    greedy = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    one = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
    warm = random_prompts(min(4, max(batches)), prompt_len, vocab, seed=99)
    transformers_generate(reference, warm, 4)
    engine.generate(warm, SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
    rows = []
    for batch in batches:
        prompts = random_prompts(batch, prompt_len, vocab)
        log(f"batch {batch}: transformers ...")
        _, hf_first = timed(lambda: transformers_generate(reference, prompts, 1), device)
        expected, hf_all = timed(lambda: transformers_generate(reference, prompts, new_tokens), device)
        log(f"batch {batch}: switchyard ...")
        _, ours_first = timed(lambda: engine.generate(prompts, one), device)
        outputs, ours_all = timed(lambda: engine.generate(prompts, greedy), device)
        decoded = batch * (new_tokens - 1)
        theirs, ours = decoded / (hf_all - hf_first), decoded / (ours_all - ours_first)
        same = sum(list(o.token_ids) == e for o, e in zip(outputs, expected))
        rows.append(Row(batch, theirs, ours, ours / theirs, same))
    return rows


def markdown(rows: list[Row], title: str) -> str:
    lines = [title, "", "| batch | transformers tok/s | switchyard tok/s | switchyard / transformers | same tokens |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.batch} | {r.transformers_tok_s:.1f} | {r.switchyard_tok_s:.1f} | {r.ratio:.2f}x | "
              f"{r.same_tokens}/{r.batch} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--device", default="cuda", help="cpu, cuda or cuda:N (default cuda)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--batches", default="1,32,128", help="comma-separated batch sizes")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--expert-kernel", default="torch", choices=["torch", "vllm"])
    p.add_argument("--kv-cache-memory", type=int, default=None, help="Switchyard's KV budget in bytes")
    p.add_argument("--json", type=Path, default=None, help="write the rows and settings here")
    args = p.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: torch {torch.__version__} sees no CUDA GPU", file=sys.stderr)
        return 2
    path = resolve_model(args.model)
    dtype = resolve_dtype(args.dtype, args.device)
    batches = [int(b) for b in args.batches.split(",")]
    rows = run(path, args.device, dtype, batches, args.new_tokens, args.prompt_len, args.expert_kernel,
               args.kv_cache_memory, log=lambda m: print(m, file=sys.stderr, flush=True))
    where = torch.cuda.get_device_name(args.device) if torch.device(args.device).type == "cuda" else "CPU"
    title = (f"Decode tok/s, {path.name}, {where}, {dtype}, {args.new_tokens} new tokens after ~{args.prompt_len}-"
             f"token prompts, expert kernel {args.expert_kernel}, torch {torch.__version__}")
    print(markdown(rows, title))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": str(path), "device": args.device, "device_name": where,
                                         "dtype": dtype, "new_tokens": args.new_tokens, "prompt_len": args.prompt_len,
                                         "expert_kernel": args.expert_kernel, "torch": torch.__version__,
                                         "rows": [asdict(r) for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
