"""Affinity placement against contiguous placement, end to end, on the model being served.

1. Trace the model on text (`TraceRecorder`), fit the affinity matrix on the first windows.
2. Place experts both ways; score both on the routing of held-out windows (offline fan-out, imbalance).
3. Serve the held-out windows as prompts on the cluster with each placement, same load, and read the
   router's own fan-out and decode step time.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from switchyard.cluster.bench.cluster import Setup, cluster
from switchyard.cluster.bench.table import format_table
from switchyard.cluster.cli.trace import text_chunks
from switchyard.configs.engine import EngineConfig
from switchyard.router.affinity.affinity_placement import affinity_placement
from switchyard.router.affinity.matrix import fit_affinity
from switchyard.router.affinity.metrics import evaluate_placement
from switchyard.router.affinity.strategies import contiguous
from switchyard.router.affinity.traces import read_traces
from switchyard.router.engine import Engine
from switchyard.router.sampling import SamplingParams
from switchyard.router.trace_recorder import record_generation


def record(engine: Engine, windows: list[list[int]], scratch: Path, name: str):
    """The routing of `windows` (prompt tokens only) as a trace."""
    return read_traces(record_generation(engine, windows, SamplingParams(max_tokens=1, temperature=0.0),
                                         scratch, name).files)


def run(model: Path, text: str, groups: int, batch: int, max_tokens: int, seq_len: int, fit_windows: int,
        log) -> list[list]:
    import ray
    from ray import serve

    engine = Engine.from_pretrained(model, EngineConfig(max_num_seqs=64, max_model_len=seq_len + max_tokens + 8))
    cfg = engine.model.config
    windows = text_chunks(engine.tokenizer, text, seq_len, fit_windows + batch)
    fit, held_out = windows[:fit_windows], windows[fit_windows:]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        log(f"tracing {fit_windows} + {batch} windows of {seq_len} tokens ...")
        fit_trace = record(engine, fit, Path(scratch) / "fit", model.name)
        eval_trace = record(engine, held_out, Path(scratch) / "eval", model.name)
        placements = {"contiguous": contiguous(cfg.moe_layers, cfg.num_experts, groups),
                      "affinity": affinity_placement(fit_affinity(fit_trace), groups)}
        ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": 0})
        try:
            for name, placement in placements.items():
                report = evaluate_placement(placement, eval_trace.aligned(), cfg.hidden_size)
                path = Path(scratch) / f"{name}.json"
                placement.save(path)
                live = cluster(model, Setup(groups, "actor", 2), held_out, max_tokens, seq_len + max_tokens + 8,
                               str(path), log)
                rows.append([name, report.mean_fan_out, report.mean_imbalance, live["fan_out"],
                             live["decode_ms_per_step"], live["decode_tok_s"]])
        finally:
            serve.shutdown()
            ray.shutdown()
    return rows


def register(benchmarks) -> None:
    """Add `switchyard bench affinity` to the `bench` subparsers."""
    p = benchmarks.add_parser("affinity", help="affinity vs contiguous placement on the served model, end to end")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--text", required=True, help="text to trace: the first windows fit, the rest are the load")
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--batch", type=int, default=32, help="held-out windows served at once")
    p.add_argument("--fit-windows", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=32)
    p.set_defaults(func=main)


def main(args) -> int:
    from switchyard.cluster.bench.engine import log_to_stderr
    from switchyard.configs.defaults import resolve_model

    model = resolve_model(args.model)
    print(f"model: {model}; {args.groups} groups; fit on {args.fit_windows} windows of {args.text}, "
          f"serve {args.batch} held-out windows x {args.max_tokens} new tokens")
    rows = run(model, args.text, args.groups, args.batch, args.max_tokens, args.seq_len, args.fit_windows,
                        log_to_stderr)
    print(format_table(["placement", "held-out fan-out", "imbalance", "served fan-out", "ms/step", "decode tok/s"],
                       rows))
    return 0
