"""What recording routing traces costs the engine: decode with and without the recorder, interleaved."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch
from switchyard.cluster.bench.decode import greedy
from switchyard.cluster.bench.engine import random_prompts
from switchyard.cluster.bench.table import format_table
from switchyard.configs.engine import EngineConfig
from switchyard.router.engine import Engine
from switchyard.router.trace_recorder import TraceRecorder, trace_metadata


def run(model: Path, batch: int, max_tokens: int, repeats: int, sample_rate: float, threads: int) -> list[list]:
    torch.set_num_threads(threads)
    engine = Engine.from_pretrained(model, EngineConfig(max_num_seqs=batch, max_model_len=max_tokens + 64))
    cfg = engine.model.config
    prompts = random_prompts(batch, 24, cfg.vocab_size)
    metadata = trace_metadata(cfg, model.name)
    timings: dict[str, list[float]] = {"off": [], "on": []}
    rows_written = 0
    with tempfile.TemporaryDirectory() as scratch:
        engine.generate(prompts[:2], greedy(4))
        for _ in range(repeats):
            for mode in ("off", "on"):
                recorder = TraceRecorder(scratch, metadata, sample_rate=sample_rate) if mode == "on" else None
                engine.observer = recorder
                engine.step_log.clear()
                engine.generate(prompts, greedy(max_tokens))
                decode = [s for s in engine.step_log if s.kind == "decode"]
                timings[mode].append(sum(s.num_seqs for s in decode) / sum(s.seconds for s in decode))
                if recorder is not None:
                    recorder.close()
                    rows_written += recorder.recorded_rows
    off, on = statistics.median(timings["off"]), statistics.median(timings["on"])
    return [["tracing off", off, "-", "-"],
            [f"tracing on (sample {sample_rate:g})", on, f"{100 * (1 - on / off):.1f}%", rows_written]]


def register(benchmarks) -> None:
    """Add `switchyard bench tracing` to the `bench` subparsers."""
    p = benchmarks.add_parser("tracing", help="decode throughput with and without routing-trace recording")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="interleaved runs of each; the median is shown")
    p.add_argument("--sample-rate", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=main)


def main(args) -> int:
    from switchyard.configs.defaults import resolve_model

    model = resolve_model(args.model)
    print(f"model: {model}; batch {args.batch}, {args.max_tokens} new tokens, median of {args.repeats} runs each")
    rows = run(model, args.batch, args.max_tokens, args.repeats, args.sample_rate, args.threads)
    print(format_table(["setup", "decode tok/s", "overhead", "rows recorded"], rows))
    return 0
