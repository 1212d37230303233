"""Does pinning a torch step's OpenMP threads to cores make it fragile under other load? (vLLM-CPU's default)

    python scripts/omp_binding_check.py [--rounds 5] [--seconds 4]

vLLM's CPU backend (0.32, `VLLM_CPU_OMP_THREADS_BIND=auto`) binds its engine's OpenMP threads one to a core
(`GOMP_CPU_AFFINITY`, with torch's libgomp preloaded) and runs every op as a parallel region that ends at a
barrier. This runs the same float32 step (a batch of 64 rows through the built-in model's MoE-sized matmuls)
in a child process under three thread settings, interleaved round by round, and prints each setting's step
time: median (min-max) over the rounds. On a quiet machine the pinned setting is as fast as the others; with
other work on the cores, a pinned thread cannot move off a busy core, so the whole step waits for it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

STEP = """
import time, torch
x = torch.randn(64, 256)
w1, w2 = torch.randn(256, 2048), torch.randn(2048, 256)
def step():
    h = x
    for _ in range(12):  # as many matmul pairs as the demo model's layers x 2
        h = torch.relu(h @ w1) @ w2 / 2048
    return h
for _ in range(5):
    step()
times, end = [], time.monotonic() + {seconds}
while time.monotonic() < end:
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
times.sort()
print(1000 * times[len(times) // 2])
"""

SETTINGS = {
    "2 threads, pinned (GOMP_CPU_AFFINITY=0 1)": {"OMP_NUM_THREADS": "2", "GOMP_CPU_AFFINITY": "0 1"},
    "2 threads, unpinned": {"OMP_NUM_THREADS": "2"},
    "1 thread, unpinned": {"OMP_NUM_THREADS": "1"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per setting per round")
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KMP_"))}
    results: dict[str, list[float]] = {name: [] for name in SETTINGS}
    loads = []
    for _ in range(args.rounds):
        loads.append(os.getloadavg()[0])
        for name, env in SETTINGS.items():
            done = subprocess.run([sys.executable, "-c", STEP.replace("{seconds}", str(args.seconds))],
                                  env={**base, **env}, capture_output=True, text=True, check=True)
            results[name].append(float(done.stdout))
            print(f"round {len(loads)}: {name}: {results[name][-1]:.2f} ms", flush=True)
    print(f"{os.cpu_count()} cores; 1-min load before each round: {', '.join(f'{l:.1f}' for l in loads)}")
    for name, values in results.items():
        print(f"{name:<44} median step {statistics.median(values):6.2f} ms  "
              f"({min(values):.2f}-{max(values):.2f}, max/min {max(values) / min(values):.2f})")


if __name__ == "__main__":
    main()
