"""`switchyard bench replace`: re-placement while serving, on a workload whose routing shifts.

The app serves the built-in model with its groups placed by affinity fitted on one corpus (the routing of
windows of it, recorded on a single-process engine), or with `--initial contiguous` split contiguously, as an
app without a placement file is. Clients then send windows of that corpus, then of the other: the placement
goes stale. While the second corpus streams, the bench asks the router to re-place
(POST /v1/switchyard/placement, fitted on its own recent routing) and keeps streaming after it. Per phase:
the router's own steps (count, mean and max step time, output tok/s), the fan-out it recorded, and the fan-out
the placement endpoint predicted; greedy outputs are compared across phases (a prompt sent before and after
the switch must come back the same).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from switchyard.cluster.bench.table import format_table
from switchyard.cluster.cli.serve import free_port
from switchyard.configs.serve import TRANSPORTS

APP = "bench-replace"
REPO = Path(__file__).resolve().parents[2]
CORPORA = {"wiki": REPO.parent / "shared/data/corpus/wiki-sample.txt",
           "news": REPO.parent / "shared/data/corpus/lee-background.txt"}


@dataclass
class Phase:
    name: str
    start: float
    end: float = 0.0
    stats: tuple[dict, dict] | None = None  # the router's /v1/switchyard/stats at start and end
    predicted: float | None = None


@dataclass
class Load:
    prompts: list[list[int]]
    results: list[tuple[float, float, tuple, str | None]] = field(default_factory=list)  # start, end, key, text
    stop: bool = False


def windows(tokenizer, path: Path, count: int, length: int, seed: int) -> list[list[int]]:
    """`count` windows of `length` tokens at random places of a text file."""
    ids = tokenizer.encode(path.read_text(errors="replace"), add_special_tokens=False)
    rng = random.Random(seed)
    starts = sorted(rng.randrange(0, len(ids) - length) for _ in range(count))
    return [ids[s:s + length] for s in starts]


def fitted_placement(model: Path, prompts: list[list[int]], groups: int, out: Path, log) -> Path:
    """The affinity placement of the routing of `prompts` on a single-process engine, saved under `out`."""
    import tempfile

    from switchyard.configs.engine import EngineConfig
    from switchyard.router.affinity.affinity_placement import affinity_placement
    from switchyard.router.affinity.matrix import fit_affinity
    from switchyard.router.affinity.traces import read_traces
    from switchyard.router.engine import Engine
    from switchyard.router.sampling import SamplingParams
    from switchyard.router.trace_recorder import record_generation

    log(f"recording the routing of {len(prompts)} windows on a single-process engine ...")
    engine = Engine.from_pretrained(model, EngineConfig(max_num_seqs=32, max_model_len=512))
    with tempfile.TemporaryDirectory() as scratch:
        recorder = record_generation(engine, prompts, SamplingParams(max_tokens=1, temperature=0.0), scratch,
                                     model.name)
        trace = read_traces(recorder.files)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "placement-fitted.json"
    affinity_placement(fit_affinity(trace), groups).save(path)
    return path


def app_config(model: Path, placement: Path, groups: int, transport: str, window_tokens: int) -> dict:
    return {"model": str(model), "served_model_name": "bench", "name": APP, "num_groups": groups,
            "placement": str(placement),
            "router": {"transport": transport, "max_num_seqs": 64, "max_model_len": 512},
            "router_pool": {"num_cpus": 1, "torch_threads": 1},
            "expert_pool": {"num_cpus": 0.25, "torch_threads": 1},
            "replacement": {"window_tokens": window_tokens}}


async def _worker(http, url: str, load: Load, index: int, concurrency: int, max_tokens: int) -> None:
    i = index
    while not load.stop:
        prompt = load.prompts[i % len(load.prompts)]
        i += concurrency
        start = time.monotonic()
        r = await http.post(f"{url}/v1/completions", json={"model": "bench", "prompt": prompt,
                                                           "max_tokens": max_tokens, "temperature": 0})
        text = r.json()["choices"][0]["text"] if r.status_code == 200 else None
        load.results.append((start, time.monotonic(), tuple(prompt), text))


async def _drive(url: str, first: list[list[int]], second: list[list[int]], phase_s: float, concurrency: int,
                 max_tokens: int, min_gain: float | None, labels: tuple[str, str, str], log):
    """Phases named by `labels`: (the first corpus, the second before the switch, the second)."""
    load = Load(first)
    phases: list[Phase] = []
    async with httpx.AsyncClient(timeout=600) as http:
        async def stats() -> dict:
            return (await http.get(f"{url}/v1/switchyard/stats")).json()

        async def phase(name: str, body=None) -> tuple[Phase, dict | None]:
            log(f"{name} ...")
            current = Phase(name, time.monotonic())
            before = await stats()
            answer = None
            if body is None:
                await asyncio.sleep(phase_s)
            else:
                r = await http.post(f"{url}/v1/switchyard/placement", json=body)
                answer = r.json()
                if r.status_code != 200:
                    raise RuntimeError(f"POST /v1/switchyard/placement: HTTP {r.status_code}: {answer}")
            current.end = time.monotonic()
            current.stats = (before, await stats())
            phases.append(current)
            return current, answer

        workers = [asyncio.create_task(_worker(http, url, load, k, concurrency, max_tokens))
                   for k in range(concurrency)]
        await phase(labels[0])
        load.prompts = second  # the router's window fills with the second corpus's routing
        stale, _ = await phase(labels[1])
        switch, answer = await phase("switch (fit, load, switch, drop)", {"dry_run": False, "min_gain": min_gain})
        after, _ = await phase(f"{labels[2]}, re-placed" if answer["applied"] else f"{labels[2]}, not re-placed")
        load.stop = True
        await asyncio.gather(*workers)
        since = (await http.get(f"{url}/v1/switchyard/placement")).json().get("since_switch")
    if "current" in answer and answer["current"].get("fan_out") is not None:
        stale.predicted = answer["current"]["fan_out"]
        after.predicted = answer["proposed" if answer["applied"] else "current"]["fan_out"]
    return phases, load.results, answer, since


def run(model: Path, groups: int, phase_s: float, concurrency: int, max_tokens: int, prompt_len: int,
        transport: str, min_gain: float | None, window_tokens: int, first: str, out: Path, log,
        initial: str = "affinity"):
    import ray
    from ray import serve
    from switchyard.cluster.app import build_app
    from switchyard.router.tokenizer import Tokenizer

    second = "news" if first == "wiki" else "wiki"
    tokenizer = Tokenizer.from_dir_if_present(model)
    prompts = {name: windows(tokenizer, CORPORA[name], 256, prompt_len, seed) for seed, name in enumerate(CORPORA)}
    if initial == "affinity":
        placement = fitted_placement(model, prompts[first][:128], groups, out, log)
    else:  # what an app serves without a placement file
        from switchyard.experts.checkpoint import Checkpoint
        from switchyard.router.affinity.strategies import contiguous

        cfg = Checkpoint.open(model).config
        out.mkdir(parents=True, exist_ok=True)
        placement = out / "placement-contiguous.json"
        contiguous(cfg.moe_layers, cfg.num_experts, groups).save(placement)
    port = free_port("127.0.0.1")
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        log(f"deploying {groups} groups ({transport}) ...")
        serve.run(build_app(app_config(model, placement, groups, transport, window_tokens)), name=APP,
                  route_prefix=f"/{APP}")
        url = f"http://127.0.0.1:{port}/{APP}"
        httpx.post(f"{url}/v1/completions", timeout=300, json={"model": "bench", "prompt": prompts[first][0],
                                                               "max_tokens": 4})  # warm
        # 64 prompts each: enough to repeat, so greedy outputs are compared before and after the switch
        phases, results, answer, since = asyncio.run(_drive(url, prompts[first][128:192], prompts[second][128:192],
                                                            phase_s, concurrency, max_tokens, min_gain,
                                                            _labels(first, second, initial), log))
        steps = serve.get_app_handle(APP).step_records.remote(0.0).result()
    finally:
        serve.shutdown()
        ray.shutdown()
    return phases, results, steps, answer, since


def _labels(first: str, second: str, initial: str) -> tuple[str, str, str]:
    if initial == "affinity":
        return f"{first}, placement fitted on it", f"{second}, stale placement", second
    return f"{first}, contiguous placement", f"{second}, contiguous placement", second


HEADERS = ["phase", "seconds", "steps", "ms/step mean", "ms/step max", "output tok/s", "fan-out recorded",
           "fan-out predicted", "requests", "failed"]


def phase_rows(phases: list[Phase], results: list, steps: list[tuple[float, float, int]]) -> list[list]:
    rows = []
    for p in phases:
        mine = [(s, n) for end, s, n in steps if p.start < end <= p.end]
        seconds = np.array([s for s, _ in mine]) * 1000
        before, after = p.stats
        token_layers = after["token_layers"] - before["token_layers"]
        fan_out = (after["group_messages"] - before["group_messages"]) / token_layers if token_layers else None
        done = [r for r in results if p.start < r[1] <= p.end]
        rows.append([p.name, p.end - p.start, len(mine), float(seconds.mean()) if len(mine) else None,
                     float(seconds.max()) if len(mine) else None, sum(n for _, n in mine) / (p.end - p.start),
                     fan_out, p.predicted, len(done), sum(1 for r in done if r[3] is None)])
    return rows


def greedy_mismatches(results: list) -> tuple[int, int]:
    """(prompts answered more than once, of them those whose greedy text was not the same every time)."""
    texts: dict[tuple, list[str]] = {}
    for _, _, key, text in results:
        if text is not None:
            texts.setdefault(key, []).append(text)
    repeated = [t for t in texts.values() if len(t) > 1]
    return len(repeated), sum(1 for t in repeated if len(set(t)) > 1)


def summary(answer: dict, since: dict | None) -> list[str]:
    lines = []
    if "gain" in answer:
        cands = ", ".join(f"{name} {c['fan_out']:.3f} / {c['imbalance']:.3f}"
                          for name, c in answer.get("candidates", {}).items())
        lines.append(f"proposal on {answer['scored_tokens']} held-out window tokens: current "
                     f"{answer['current']['fan_out']:.3f} / {answer['current']['imbalance']:.3f} (fan-out / "
                     f"imbalance), proposed {answer['proposed']['strategy']} {answer['proposed']['fan_out']:.3f} / "
                     f"{answer['proposed']['imbalance']:.3f}, gain {answer['gain']:.3f}; candidates: {cands}")
    lines.append(f"{'applied' if answer['applied'] else 'not applied'}: {answer['reason']}")
    if answer.get("applied"):
        s = answer["switch"]
        lines.append(f"switch: {s['experts_loaded']} experts loaded on {s['replicas']} replicas in {s['load_s']:.2f} s, "
                     f"tables switched {s['switch_s'] * 1000:.1f} ms after under {s['sequences_in_flight']} running "
                     f"sequences, old experts dropped in {s['drop_s']:.2f} s")
    if since and since.get("predicted_fan_out") is not None:
        which = ("the same tokens" if since["window_holds_all"] else
                 f"the last {since['window_tokens']} of them (what the window still holds)")
        lines.append(f"since the switch: fan-out recorded {since['recorded_fan_out']:.4f} over "
                     f"{since['token_layers'] // max(1, len(answer_layers(answer)))} tokens; on {which} the "
                     f"placement predicts {since['predicted_fan_out']:.4f}, its dispatch replayed call by call "
                     f"{since['replayed_fan_out']:.4f}")
    return lines


def answer_layers(answer: dict) -> list:
    return json.loads(answer["placement"])["layers"]


def to_json(phases, results, steps, answer, since) -> str:
    return json.dumps({"phases": [vars(p) for p in phases], "answer": answer, "since_switch": since,
                       "requests": len(results), "steps": len(steps)}, indent=1, default=str)


def register(benchmarks) -> None:
    """Add `switchyard bench replace` to the `bench` subparsers."""
    p = benchmarks.add_parser("replace", help="re-placement while serving, on traffic that moves from one corpus to the other",
                         description="Serve the model with groups placed by affinity on one corpus, stream windows of "
                                     "it, then of the other, re-place while streaming (POST /v1/switchyard/placement, "
                                     "fitted on the router's recent routing), stream on; per phase steps, step time, "
                                     "tok/s and fan-out, recorded and predicted.")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--first", default="wiki", choices=["wiki", "news"], help="the corpus the traffic starts with")
    p.add_argument("--initial", default="affinity", choices=["affinity", "contiguous"],
                   help="the placement served first: affinity fitted on --first, or the contiguous split")
    p.add_argument("--phase-seconds", type=float, default=30.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=64, help="tokens per prompt window")
    p.add_argument("--transport", default=TRANSPORTS[0], choices=TRANSPORTS)
    p.add_argument("--min-gain", type=float, default=0.0,
                   help="the switch's threshold (1 - proposed / current busiest-group load, fan-out x imbalance)")
    p.add_argument("--window-tokens", type=int, default=8192, help="the router's window of recent routing")
    p.add_argument("--out", default="runs/bench-replace", help="folder for the fitted placement and a JSON record")
    p.set_defaults(func=main)


def main(args) -> int:
    from pathlib import Path

    from switchyard.cluster.bench.engine import log_to_stderr
    from switchyard.configs.defaults import resolve_model

    model = resolve_model(args.model)
    missing = [str(p) for p in CORPORA.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"switchyard bench replace: no corpus at {', '.join(missing)} (../shared/data)")
    second = "news" if args.first == "wiki" else "wiki"
    initial = f"placement fitted on {args.first}" if args.initial == "affinity" else "contiguous placement"
    print(f"model: {model}; {args.groups} expert groups, {args.transport} transport; {initial}, traffic "
          f"{args.first} then {second}; {args.concurrency} clients, windows of "
          f"{args.prompt_len} tokens, {args.max_tokens} greedy tokens each; phases of {args.phase_seconds:.0f} s")
    phases, results, steps, answer, since = run(model, args.groups, args.phase_seconds, args.concurrency,
                                                      args.max_tokens, args.prompt_len, args.transport, args.min_gain,
                                                      args.window_tokens, args.first, Path(args.out), log_to_stderr,
                                                      args.initial)
    print(format_table(HEADERS, phase_rows(phases, results, steps)))
    for line in summary(answer, since):
        print(line)
    repeated, changed = greedy_mismatches(results)
    print(f"greedy outputs: {repeated} prompts answered more than once, {changed} of them differently")
    Path(args.out, "result.json").write_text(to_json(phases, results, steps, answer, since))
    failed = sum(1 for r in results if r[3] is None)
    return 1 if failed or changed else 0
