"""`switchyard bench autoscale`: the shifting workload with autoscaled expert groups against fixed replica counts.

Each setup (fixed at the minimum, fixed at the maximum, autoscaled between them) serves the same phases:
prose, then number tables (`shifting_load.py`: different groups hot), then one request at a time. A sampler
reads `serve.status()` every half second; streaming requests give each request's inter-token latency
((end - first token) / (tokens - 1), as aiperf defines it). Per phase: replicas per group, output tok/s, p95
ITL, replica-hours (router and expert replicas) and $ per million output tokens at the given prices, and how
long each scale-up took to show in `serve.status()` after the phase began.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import httpx
from switchyard.cluster.bench.shifting_load import (
    hot_placement,
    number_prompts,
    prose_prompts,
    routing_counts,
)
from switchyard.cluster.bench.autoscale_results import (
    PHASE_HEADERS,
    TOTAL_HEADERS,
    Phase,
    PhaseResult,
    phase_rows,
    total_rows,
)
from switchyard.cluster.bench.shift import SHIFT_HEADERS, TARGET_UTILIZATION, shift_rows, shift_sample
from switchyard.cluster.bench.table import format_table
from switchyard.cluster.cli.serve import free_port
from switchyard.configs.serve import TRANSPORTS

APP = "bench-autoscale"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_TEXT = REPO.parent / "shared/data/corpus/wiki-sample.txt"


def workload(model: Path, text: str, phase_s: float, concurrency: int, max_tokens: int, out: Path, log,
             ramp_s: float = 0.0):
    """The phases, and the placement that makes number tables hot on group 0 (from their routing on a
    single-process engine). With ramp_s, the number tables replace prose gradually over that many seconds
    (then phase_s settled); without, every stream changes at once (a step)."""
    from switchyard.configs.engine import EngineConfig
    from switchyard.router.engine import Engine
    from switchyard.router.sampling import SamplingParams

    numbers = number_prompts(32)
    prose = prose_prompts(text, 32)
    log("routing of the number tables on a single-process engine ...")
    engine = Engine.from_pretrained(model, EngineConfig(max_num_seqs=32, max_model_len=512))
    counts, _ = routing_counts(engine, numbers[:16], SamplingParams(max_tokens=max_tokens, temperature=0.0))
    out.mkdir(parents=True, exist_ok=True)
    placement = out / "numbers-hot.json"
    hot_placement(counts, engine.model.config.moe_layers, engine.model.config.num_experts // 4).save(placement)
    phases = [Phase("prose", prose, phase_s, concurrency), Phase("numbers", numbers, ramp_s + phase_s, concurrency, tuple(prose), ramp_s),
              Phase("one at a time", prose, phase_s / 2, 1)]
    return phases, str(placement)


def app_config(model: Path, placement: str, min_replicas: int, max_replicas: int, autoscale: bool,
               capacity: float | None, prices: tuple[float, float], transport: str = TRANSPORTS[0],
               forecast: bool = False, look_ahead: tuple[float, float] = (0.0, 0.0)) -> dict:
    """look_ahead: (replica_start_s, forecast_lead_s) of the forecast's look-ahead, with forecast on."""
    pool = {"num_cpus": 0.25, "torch_threads": 1}
    if autoscale:
        pool["autoscaling"] = {"min_replicas": min_replicas, "max_replicas": max_replicas,
                               "capacity_rows_per_s": capacity, "forecast": forecast}
        if forecast:
            pool["autoscaling"].update(replica_start_s=look_ahead[0], forecast_lead_s=look_ahead[1])
    else:
        pool["num_replicas"] = max_replicas
    return {"model": str(model), "served_model_name": "bench", "name": APP, "num_groups": 2, "placement": placement,
            "router": {"transport": transport, "max_num_seqs": 64, "max_model_len": 512},
            "router_pool": {"num_cpus": 1, "torch_threads": 1}, "expert_pool": pool,
            "prices": {"router_replica_per_hour": prices[0], "expert_replica_per_hour": prices[1]}}


def group_replicas() -> list[int]:
    from ray import serve

    deployments = serve.status().applications[APP].deployments
    return [sum(deployments[f"{APP}-experts-{g}"].replica_states.values()) for g in range(2)]


async def _request(client, url: str, prompt: str, max_tokens: int) -> tuple[int, float | None]:
    """(output tokens, inter-token latency) of one streaming completion; (-1, None) on an error."""
    body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    first = end = None
    tokens = 0
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            return -1, None
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk.get("choices") and first is None:
                first = time.monotonic()
            end = time.monotonic()
    itl = (end - first) / (tokens - 1) if first is not None and tokens > 1 else None
    return tokens, itl


def run_phase(url: str, setup: str, phase: Phase, max_tokens: int) -> PhaseResult:
    result = PhaseResult(setup, phase.name, phase.seconds)
    start = time.monotonic()
    stop = threading.Event()
    initial = group_replicas()
    stats_url = url.replace("/v1/completions", "/v1/switchyard/stats")

    def sample():
        while not stop.is_set():
            counts = group_replicas()
            result.replicas.append(counts)
            try:
                result.samples.append(shift_sample(APP, stats_url, time.monotonic() - start))
            except Exception:  # a busy router answers late: that sample is skipped
                pass
            for g, (now, was) in enumerate(zip(counts, initial)):
                if now > was and g not in result.scale_up_s:
                    result.scale_up_s[g] = time.monotonic() - start
            stop.wait(0.5)

    async def load():
        async with httpx.AsyncClient(timeout=300) as client:
            async def worker(w: int):
                i = w
                while time.monotonic() - start < phase.seconds:
                    tokens, itl = await _request(client, url, phase.prompt(i, time.monotonic() - start), max_tokens)
                    i += phase.concurrency
                    if tokens < 0:
                        result.errors += 1
                        continue
                    if time.monotonic() - start <= phase.seconds:  # finished inside the phase
                        result.tokens += tokens
                    if itl is not None:
                        result.itl.append(itl)
                        result.itl_at.append((time.monotonic() - start, itl))
            await asyncio.gather(*[worker(w) for w in range(phase.concurrency)])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        asyncio.run(load())
    finally:
        stop.set()
        sampler.join()
    result.seconds = max(phase.seconds, time.monotonic() - start)
    return result


def measured_capacity() -> float | None:
    """Rows per busy second over every expert replica since their last sample (their LoadMeters)."""
    import ray
    from switchyard.cluster.deployments.registry import get_registry

    def sample(_actor):
        from switchyard.cluster.deployments import expert_group as expert_deployment

        return expert_deployment._SERVING.load.sample()

    _, replicas = ray.get(get_registry(APP).snapshot.remote())
    samples = ray.get([a.__ray_call__.remote(sample) for group in replicas.values() for a in group.values()])
    busy = sum(s["busy"] for s in samples)
    return sum(s["rows_per_s"] for s in samples) / busy if busy > 0.05 else None


def run_setup(label: str, config: dict, phases: list[Phase], max_tokens: int,
              port: int, log, measure: bool = False) -> tuple[list[PhaseResult], float | None]:
    from ray import serve
    from switchyard.cluster.app import build_app

    log(f"{label}: deploying ...")
    serve.run(build_app(config), name=APP, route_prefix=f"/{APP}")
    url = f"http://127.0.0.1:{port}/{APP}/v1/completions"
    results, capacity = [], None
    try:
        asyncio.run(_warm(url, phases[0].prompts[0], max_tokens))
        if measure:
            measured_capacity()  # start a fresh window
        for phase in phases:
            log(f"{label}: {phase.name} ({phase.seconds:.0f} s, {phase.concurrency} at a time) ...")
            results.append(run_phase(url, label, phase, max_tokens))
            if measure and phase is phases[0]:
                capacity = measured_capacity()
    finally:
        serve.delete(APP)
    return results, capacity


async def _warm(url: str, prompt: str, max_tokens: int) -> None:
    async with httpx.AsyncClient(timeout=300) as client:
        await _request(client, url, prompt, max_tokens)


def run(model: Path, text: str, min_replicas: int, max_replicas: int, phase_s: float, concurrency: int,
        max_tokens: int, capacity: float | None, prices: tuple[float, float], out: Path, log,
        transport: str = TRANSPORTS[0], forecast: bool = False, with_fixed_max: bool = True, ramp_s: float = 0.0,
        look_ahead: tuple[float, float] = (0.0, 0.0)):
    import ray
    from ray import serve

    for attempt in range(3):  # on a loaded machine the raylet may miss Ray's 30 s start-up wait
        try:
            if os.environ.get("RAY_ADDRESS"):  # a cluster started apart (`ray start --head`)
                ray.init(log_to_driver=False)
            else:
                ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
            break
        except Exception as err:
            if attempt == 2:
                raise
            log(f"Ray did not start ({err}); trying again")
    phases, placement = workload(model, text, phase_s, concurrency, max_tokens, out, log, ramp_s)
    port = free_port("127.0.0.1")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    all_results = []
    try:
        def config(low: int, high: int, autoscale: bool, capacity: float | None = None, led: bool = False) -> dict:
            return app_config(model, placement, low, high, autoscale, capacity, prices, transport, led, look_ahead)

        # capacity where scale-up decisions start: one replica per group, seeing whole batches
        fixed_min, measured = run_setup(f"fixed at {min_replicas}",
                                        config(min_replicas, min_replicas, False), phases, max_tokens, port, log,
                                        measure=capacity is None)
        capacity = capacity or measured
        log(f"capacity of one replica: {capacity:.0f} rows per busy second" if capacity else "capacity: not measured")
        led = []
        if forecast:  # first after the capacity is known: a failure shows early
            led, _ = run_setup(f"forecast-led {min_replicas}-{max_replicas}",
                               config(min_replicas, max_replicas, True, capacity, led=True), phases, max_tokens, port,
                               log)
        auto, _ = run_setup(f"autoscaled {min_replicas}-{max_replicas}",
                            config(min_replicas, max_replicas, True, capacity), phases, max_tokens, port, log)
        fixed_max = []
        if with_fixed_max:
            fixed_max, _ = run_setup(f"fixed at {max_replicas}",
                                     config(max_replicas, max_replicas, False), phases, max_tokens, port, log)
        all_results = fixed_min + fixed_max + auto + led
    finally:
        serve.shutdown()
        ray.shutdown()
    return all_results, capacity


def register(benchmarks) -> None:
    """Add `switchyard bench autoscale` to the `bench` subparsers."""
    p = benchmarks.add_parser("autoscale", help="shifting workload: autoscaled expert groups vs fixed at min and max",
                         description="Prose, then number tables (different expert groups hot), then one request at "
                                     "a time, served by 2 expert groups fixed at --max-replicas, fixed at "
                                     "--min-replicas, and autoscaled between them; per phase replicas, tok/s, p95 "
                                     "ITL, replica-hours, $/1M tokens and scale-up times.")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--text", default=None, help="prose to serve (default: ../shared/data/corpus/wiki-sample.txt)")
    p.add_argument("--min-replicas", type=int, default=1)
    p.add_argument("--max-replicas", type=int, default=3)
    p.add_argument("--phase-seconds", type=float, default=40.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--capacity", type=float, default=None,
                   help="rows/s of one fully busy replica (default: measured in the fixed-at-min run's first phase)")
    p.add_argument("--transport", default=TRANSPORTS[0], choices=TRANSPORTS)
    p.add_argument("--router-price", type=float, default=1.2, help="$ per router replica-hour")
    p.add_argument("--expert-price", type=float, default=3.0, help="$ per expert-group replica-hour")
    p.add_argument("--forecast", action="store_true",
                   help="also run the groups autoscaled with the router's load forecast as a floor "
                        "(expert_pool.autoscaling.forecast), and compare both autoscaled setups on the shift to "
                        "number tables")
    p.add_argument("--ramp-seconds", type=float, default=0.0,
                   help="shift from prose to number tables gradually over this many seconds (the numbers phase then "
                        "lasts this plus --phase-seconds); default 0: every stream at once")
    p.add_argument("--replica-start-s", type=float, default=0.0,
                   help="with --forecast: the forecast-led setup's replica_start_s (seconds a new replica takes to "
                        "serve), which the floor's trend is looked ahead by")
    p.add_argument("--forecast-lead-s", type=float, default=0.0,
                   help="with --forecast: its forecast_lead_s (the new replica should serve this long before the load)")
    p.add_argument("--no-fixed-max", action="store_true", help="leave out the setup fixed at --max-replicas")
    p.add_argument("--out", default="runs/bench-autoscale", help="folder for the placement file")
    p.set_defaults(func=main)


def main(args) -> int:
    from pathlib import Path

    from switchyard.cluster.bench.engine import log_to_stderr
    from switchyard.configs.defaults import resolve_model

    model = resolve_model(args.model)
    text = Path(args.text) if args.text else DEFAULT_TEXT
    if not text.is_file():
        raise SystemExit(f"switchyard bench autoscale: no prose at {text}; pass --text FILE")
    if not 1 <= args.min_replicas < args.max_replicas:
        raise SystemExit("switchyard bench autoscale: need 1 <= --min-replicas < --max-replicas")
    if (args.replica_start_s or args.forecast_lead_s) and not args.forecast:
        raise SystemExit("switchyard bench autoscale: --replica-start-s and --forecast-lead-s set the forecast's "
                         "look-ahead; add --forecast")
    if args.ramp_seconds < 0 or args.replica_start_s < 0 or args.forecast_lead_s < 0:
        raise SystemExit("switchyard bench autoscale: --ramp-seconds, --replica-start-s and --forecast-lead-s must be "
                         ">= 0")
    prices = (args.router_price, args.expert_price)
    shift = f"over a {args.ramp_seconds:.0f} s ramp, then settled" if args.ramp_seconds else "at once"
    print(f"model: {model}; 2 expert groups, {args.transport} transport; phases of {args.phase_seconds:.0f} s: prose "
          f"({text.name}), number tables ({shift}), one at a time; {args.concurrency} streams, {args.max_tokens} "
          f"tokens each; "
          f"prices ${prices[0]}/router and ${prices[1]}/expert replica-hour")
    results, capacity = run(model, str(text), args.min_replicas, args.max_replicas, args.phase_seconds,
                                      args.concurrency, args.max_tokens, args.capacity, prices, Path(args.out),
                                      log_to_stderr, args.transport, args.forecast, not args.no_fixed_max,
                                      args.ramp_seconds, (args.replica_start_s, args.forecast_lead_s))
    print(f"capacity used by the autoscaler: {capacity:.0f} rows per busy second" if capacity else
          "capacity: measured live by the policy")
    print(format_table(PHASE_HEADERS, phase_rows(results, prices)))
    print(format_table(TOTAL_HEADERS, total_rows(results, prices)))
    if capacity:
        print(f"the shift to number tables (target utilization {TARGET_UTILIZATION}):")
        print(format_table(SHIFT_HEADERS, shift_rows(results, capacity, args.ramp_seconds)))
    return 1 if any(r.errors for r in results) else 0
