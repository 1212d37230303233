"""The single-process engine against the cluster (1, 2, 4 expert groups × transports), in one run."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from switchyard.cluster.bench.decode import decode_summary, greedy, time_round_trip
from switchyard.cluster.bench.engine import random_prompts
from switchyard.cluster.bench.table import format_table
from switchyard.configs.engine import EngineConfig
from switchyard.configs.serve import TRANSPORTS
from switchyard.router.engine import Engine


@dataclass(frozen=True)
class Setup:
    groups: int
    transport: str
    micro_batches: int
    router_threads: int = 1  # more threads than cores' worth make OpenMP and channel spinning fight

    @property
    def label(self) -> str:
        threads = f", router threads={self.router_threads}" if self.router_threads != 1 else ""
        return (f"cluster, {self.groups} group{'s' if self.groups > 1 else ''}, {self.transport}, "
                f"mb={self.micro_batches}{threads}")


DEFAULT_SETUPS = [
    Setup(1, "compiled", 1), Setup(1, "actor", 1), Setup(1, "handle", 1),
    Setup(2, "compiled", 1), Setup(2, "compiled", 2), Setup(2, "socket", 1), Setup(2, "actor", 1), Setup(2, "actor", 2), Setup(2, "handle", 1),
    Setup(4, "compiled", 1), Setup(4, "actor", 1), Setup(4, "handle", 1),
]


def model_len(prompt_len: int, max_tokens: int) -> int:
    """The engine's max_model_len for a run: room for the prompt, its answer and the warm-up's."""
    return prompt_len * 2 + max_tokens + 8


def single_process(model: Path, prompts, max_tokens: int, max_model_len: int, threads: int,
                   round_trip: bool = True) -> dict:
    """The one-process engine's decode of `prompts`; with `round_trip`, also its experts' time for one layer."""
    torch.set_num_threads(threads)
    engine = Engine.from_pretrained(model, EngineConfig(max_num_seqs=len(prompts), max_model_len=max_model_len))
    engine.generate(prompts[:2], greedy(4))
    engine.step_log.clear()
    start = time.perf_counter()
    engine.generate(prompts, greedy(max_tokens))
    summary = decode_summary(list(engine.step_log), time.perf_counter() - start)
    if round_trip:
        summary["round_trip_ms"] = 1000 * time_round_trip(engine.experts, engine.model, len(prompts), 20)
    summary["fan_out"] = 1.0
    return summary


def cluster(model: Path, setup: Setup, prompts, max_tokens: int, max_model_len: int, placement: str | None,
            log) -> dict:
    from ray import serve
    from switchyard.cluster.app import build_app

    name = f"bench-{setup.groups}-{setup.transport}-{setup.micro_batches}"
    config = {"model": str(model), "name": name, "num_groups": setup.groups, "placement": placement,
              "router": {"transport": setup.transport, "micro_batches": setup.micro_batches,
                         "max_num_seqs": len(prompts), "max_model_len": max_model_len},
              "router_pool": {"num_cpus": 1, "torch_threads": setup.router_threads},
              "expert_pool": {"num_cpus": 0.5, "torch_threads": 1}}
    log(f"{setup.label}: deploying ...")
    serve.run(build_app(config), name=name, route_prefix=f"/{name}")
    try:
        router = serve.get_app_handle(name)
        router.bench.remote(prompts[:2], 4).result()  # warm up every process
        log(f"{setup.label}: running ...")
        summary = router.bench.remote(prompts, max_tokens).result()
        summary["round_trip_ms"] = 1000 * router.round_trip.remote(len(prompts), 20).result()
        return summary
    finally:
        serve.delete(name)


def run(model: Path, batch: int, max_tokens: int, prompt_len: int, setups: list[Setup], log,
        placement: str | None = None, threads: int = 2) -> list[list]:
    import ray
    from ray import serve
    from switchyard.experts.checkpoint import Checkpoint

    vocab = Checkpoint.open(model).config.vocab_size
    prompts = random_prompts(batch, prompt_len, vocab)
    max_model_len = model_len(prompt_len, max_tokens)
    log("single process ...")
    base = single_process(model, prompts, max_tokens, max_model_len, threads)
    rows = [["single process", base["decode_tok_s"], base["decode_ms_per_step"], base["round_trip_ms"], 1.0, "1.00"]]
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": 0})
    try:
        for setup in setups:
            r = cluster(model, setup, prompts, max_tokens, max_model_len, placement, log)
            rows.append([setup.label, r["decode_tok_s"], r["decode_ms_per_step"], r["round_trip_ms"], r["fan_out"],
                         f"{r['decode_tok_s'] / base['decode_tok_s']:.2f}"])
    finally:
        serve.shutdown()
        ray.shutdown()
    return rows


def register(benchmarks) -> None:
    """Add `switchyard bench cluster` to the `bench` subparsers."""
    p = benchmarks.add_parser("cluster", help="single-process engine vs the cluster: groups x transports")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=32, help="new tokens per sequence")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--groups", type=int, action="append", help="only these group counts")
    p.add_argument("--transport", action="append", choices=TRANSPORTS,
                   help="only these transports")
    p.add_argument("--router-threads", type=int, default=1, help="torch threads of the router replica")
    p.add_argument("--placement", default=None, help="placement JSON for the cluster runs")
    p.set_defaults(func=main)


def main(args) -> int:
    from switchyard.cluster.bench.engine import log_to_stderr
    from switchyard.configs.defaults import resolve_model

    model = resolve_model(args.model)
    setups = [replace(s, router_threads=args.router_threads) for s in DEFAULT_SETUPS
              if (not args.groups or s.groups in args.groups) and (not args.transport or s.transport in args.transport)]
    print(f"model: {model}; batch {args.batch}, {args.max_tokens} new tokens per sequence, greedy")
    rows = run(model, args.batch, args.max_tokens, args.prompt_len, setups, log_to_stderr, args.placement)
    print(format_table(["setup", "decode tok/s", "ms/step", "layer round trip ms", "fan-out", "vs single"], rows))
    return 0
