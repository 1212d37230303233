"""What Ray's dashboard costs an idle `switchyard serve`: CPU share and memory of the whole process tree, with and
without `--dashboard`.

Each run starts `switchyard serve` (one process, the built-in model) as a user would, sends one completion, waits
a few seconds, then measures the tree's CPU over --seconds and its memory (RSS, and PSS, which counts a page
shared by several processes once, split between them), and stops it. Runs alternate between the two settings;
on a shared machine the spread across --repeats matters as much as the median.

    .venv/bin/python scripts/dashboard_cost.py --repeats 3 --seconds 30
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from switchyard.cluster.bench.cpu import cores_used, process_tree
from switchyard.cluster.bench.serve import Server, switchyard_system
from switchyard.cluster.cli.serve import free_port


def memory_mib(pids: list[int]) -> tuple[float, float]:
    """(RSS, PSS) of the processes together, in MiB, from /proc/PID/smaps_rollup."""
    rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key == "Rss":
                rss += int(value.split()[0])
            elif key == "Pss":
                pss += int(value.split()[0])
    return rss / 1024, pss / 1024


def measure(dashboard: bool, seconds: float, settle_s: float, num_cpus: float, log_dir: Path) -> dict:
    port = free_port("127.0.0.1")
    extra = ["--num-cpus", str(num_cpus)]
    if dashboard:
        extra += ["--dashboard", "--dashboard-port", str(free_port("127.0.0.1"))]
    system = switchyard_system("dashboard" if dashboard else "no dashboard", Path("configs/demo-model"),
                               "demo-model", port, 0, extra)
    server = Server(system, port, log_dir / f"serve-{'dashboard' if dashboard else 'plain'}-{time.time():.0f}.log")
    try:
        server.wait_ready("demo-model", timeout_s=300)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=120,
                       json={"model": "demo-model", "prompt": "The history of", "max_tokens": 16})
        r.raise_for_status()
        time.sleep(settle_s)
        tree = process_tree(server.proc.pid)
        cores = cores_used(tree, seconds)
        rss, pss = memory_mib(process_tree(server.proc.pid))
        return {"cores": cores, "rss": rss, "pss": pss, "processes": len(tree)}
    finally:
        server.stop()


def spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each setting (alternating)")
    parser.add_argument("--seconds", type=float, default=30.0, help="CPU measured over this long, idle")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the request before measuring")
    parser.add_argument("--num-cpus", type=float, default=6.0, help="logical CPUs of each local Ray")
    args = parser.parse_args()
    results: dict[bool, list[dict]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="dashboard-cost-") as logs:
        for i in range(args.repeats):
            for dashboard in (False, True):
                result = measure(dashboard, args.seconds, args.settle, args.num_cpus, Path(logs))
                results[dashboard].append(result)
                print(f"run {i + 1} {'dashboard' if dashboard else 'plain'}: {result}", flush=True)
    print(f"\nidle over {args.seconds:g} s after one request; median (min-max) of {args.repeats} runs")
    print("| `switchyard serve` | processes | CPU, % of one core | RSS MiB | PSS MiB |")
    print("|---|---|---|---|---|")
    for dashboard in (False, True):
        rows = results[dashboard]
        print(f"| {'--dashboard' if dashboard else 'default'} | {spread([r['processes'] for r in rows], '.0f')} | "
              f"{spread([100 * r['cores'] for r in rows], '.1f')} | {spread([r['rss'] for r in rows], '.0f')} | "
              f"{spread([r['pss'] for r in rows], '.0f')} |")


if __name__ == "__main__":
    main()
