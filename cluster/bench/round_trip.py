"""One MoE layer's round trip from the router to its expert groups and back, per transport and token count.

For each transport (Ray's Compiled Graph, direct actor calls, Serve handles) this deploys the application with
`--groups` expert groups on a local Ray, then has the router time one layer's dispatch to every group and back
(`round_trip`: random routing, the groups' expert compute included) at each token count. Each figure is the
median over `--samples` calls of the mean of `--repeats` round trips, with the spread (min-max) of those calls.
The first row is the same layer's experts computed in the driver's process: what the round trip would cost
with no transport at all, so the difference is the transport's (messages, channels, scheduling).
"""

from __future__ import annotations

from pathlib import Path

from switchyard.cluster.bench.serve_summary import spread
from switchyard.cluster.bench.table import format_table
from switchyard.configs.serve import TRANSPORTS


def in_process(model: Path, tokens: list[int], samples: int, repeats: int) -> list[str]:
    import torch
    from switchyard.cluster.bench.decode import time_round_trip
    from switchyard.configs.engine import EngineConfig
    from switchyard.router.engine import Engine

    torch.set_num_threads(1)  # as each expert group replica (expert_pool.torch_threads)
    engine = Engine.from_pretrained(model, EngineConfig(max_num_seqs=max(tokens), max_model_len=64))
    return [str(spread([1000 * time_round_trip(engine.experts, engine.model, n, repeats) for _ in range(samples)]))
            for n in tokens]


def deployed(model: Path, transport: str, groups: int, tokens: list[int], samples: int, repeats: int,
             log) -> list[str]:
    from ray import serve
    from switchyard.cluster.app import build_app

    name = f"round-trip-{transport}"
    config = {"model": str(model), "name": name, "num_groups": groups,
              "router": {"transport": transport, "max_num_seqs": max(tokens), "max_model_len": 64},
              "router_pool": {"num_cpus": 1, "torch_threads": 1},
              "expert_pool": {"num_cpus": 0.5, "torch_threads": 1}}
    log(f"{transport}: deploying {groups} groups ...")
    serve.run(build_app(config), name=name, route_prefix=f"/{name}")
    try:
        router = serve.get_app_handle(name)
        cells = []
        for n in tokens:
            router.round_trip.remote(n, 3).result()  # warm this shape (and build the compiled graph)
            cells.append(str(spread([1000 * router.round_trip.remote(n, repeats).result() for _ in range(samples)])))
            log(f"{transport}: {n} tokens: {cells[-1]} ms")
        return cells
    finally:
        serve.delete(name)


def run(model: Path, transports: list[str], groups: int, tokens: list[int], samples: int, repeats: int,
        log, num_cpus: int = 8) -> list[list]:
    import os

    import ray
    from ray import serve

    log("in process ...")
    rows = [["experts in process (no transport)", *in_process(model, tokens, samples, repeats)]]
    log(f"in process: {rows[0][1:]} ms")
    # Ray starts its workers at nice 15; a round trip would then measure who else runs on the machine
    # (as `switchyard serve` does, cluster/cli/serve.py)
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": 0})
    try:
        for transport in transports:
            rows.append([f"{groups} groups, {transport}", *deployed(model, transport, groups, tokens, samples,
                                                                    repeats, log)])
    finally:
        serve.shutdown()
        ray.shutdown()
    return rows


def register(benchmarks) -> None:
    """Add `switchyard bench round-trip` to the `bench` subparsers."""
    p = benchmarks.add_parser("round-trip", help="one layer's round trip to the expert groups, per transport",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--groups", type=int, default=2)
    p.add_argument("--transport", action="append", choices=TRANSPORTS, help="only these transports (repeatable)")
    p.add_argument("--tokens", type=int, action="append", help="tokens per layer (default: 1, 16 and 64)")
    p.add_argument("--samples", type=int, default=5, help="calls per figure (median and min-max over them)")
    p.add_argument("--repeats", type=int, default=20, help="round trips per call (their mean is one sample)")
    p.set_defaults(func=main)


def main(args) -> int:
    from switchyard.cluster.bench.engine import log_to_stderr
    from switchyard.configs.defaults import resolve_model

    model = resolve_model(args.model)
    tokens = sorted(set(args.tokens or [1, 16, 64]))
    transports = [t for t in TRANSPORTS if not args.transport or t in args.transport]
    print(f"model: {model}; {args.groups} expert groups; one MoE layer, random routing; ms per round trip, "
          f"median (min-max) of {args.samples} calls of {args.repeats}")
    rows = run(model, transports, args.groups, tokens, args.samples, args.repeats, log_to_stderr)
    print(format_table(["setup", *(f"{n} token{'s' if n > 1 else ''} ms" for n in tokens)], rows))
    return 0
