"""What bounds the routed experts' GEMMs at 64 decoding sequences on this machine: compute, or reading weights.

    python scripts/expert_gemm_bound.py [--tokens 64] [--rounds 3]

At 64 sequences, top-4 of 32 experts, each expert gets ~8 rows a layer: a GEMM of [8, 256] by one expert's
[256, 256] weights (256 KiB in float32), 32 of them a layer, six layers a step. Prints, on one torch thread:
- a streaming copy's bandwidth (the most the memory gives one core);
- one 8-row GEMM on the same expert's weights (in cache) and cycling over the 32 experts (not in cache), and a
  single-row product (matrix-vector) cycling: if the cycling GEMM costs about what the matrix-vector does, the
  weights' reads bound it, not the arithmetic;
- the built-in model's six layers of grouped GEMMs (F.grouped_mm) at `--tokens`, on one thread, and with the
  experts split in halves over two threads (each one torch thread): if two threads are no faster, the cores
  share what bounds them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import statistics
import time

import torch
import torch.nn.functional as F

EXPERTS, HIDDEN, INTER, LAYERS, TOP_K = 32, 256, 128, 6, 4  # the built-in model's shape


def timed(fn, reps: int) -> float:
    """Seconds per call, after a few calls to warm up."""
    for _ in range(max(3, reps // 20)):
        fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def swiglu_experts(x, ends, w13, w2):
    gate, up = F.grouped_mm(x, w13.transpose(1, 2), offs=ends).chunk(2, dim=-1)
    return F.grouped_mm(F.silu(gate) * up, w2.transpose(1, 2), offs=ends)


def measure(tokens: int) -> dict[str, float]:
    big = torch.randn(25_000_000)
    copy = torch.empty_like(big)
    copy_s = timed(lambda: copy.copy_(big), 10)
    weights = [torch.randn(2 * INTER, HIDDEN) for _ in range(EXPERTS)]
    rows, one = torch.randn(8, HIDDEN), torch.randn(HIDDEN)
    turn = itertools.count()
    hot = timed(lambda: rows @ weights[0].T, 2000)
    cycling = timed(lambda: rows @ weights[next(turn) % EXPERTS].T, 2000)
    matvec = timed(lambda: torch.mv(weights[next(turn) % EXPERTS], one), 2000)

    layers = [(torch.randn(EXPERTS, 2 * INTER, HIDDEN), torch.randn(EXPERTS, HIDDEN, INTER)) for _ in range(LAYERS)]
    ids = torch.randint(0, EXPERTS, (tokens * TOP_K,)).sort().values
    ends = torch.cumsum(torch.bincount(ids, minlength=EXPERTS), 0).to(torch.int32)
    x = torch.randn(tokens * TOP_K, HIDDEN)
    half = EXPERTS // 2
    cut = int(ends[half - 1])
    pool = concurrent.futures.ThreadPoolExecutor(1)  # the second half's thread; torch ops release the GIL

    def one_thread():
        for w13, w2 in layers:
            swiglu_experts(x, ends, w13, w2)

    def two_threads():
        for w13, w2 in layers:
            other = pool.submit(swiglu_experts, x[cut:], ends[half:] - cut, w13[half:], w2[half:])
            swiglu_experts(x[:cut], ends[:half], w13[:half], w2[:half])
            other.result()

    pool.submit(torch.set_num_threads, 1).result()
    return {"copy_gb_s": 2 * big.numel() * 4 / copy_s / 1e9, "gemm_hot_us": hot * 1e6,
            "gemm_cycling_us": cycling * 1e6, "matvec_cycling_us": matvec * 1e6,
            "step_1_thread_ms": timed(one_thread, 30) * 1e3, "step_2_threads_ms": timed(two_threads, 30) * 1e3}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=64, help="decoding sequences (one token each)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    rounds = [measure(args.tokens) for _ in range(args.rounds)]
    labels = {"copy_gb_s": "streaming copy, GB/s", "gemm_hot_us": "8-row GEMM, one expert's weights in cache, us",
              "gemm_cycling_us": "8-row GEMM, cycling over 32 experts, us",
              "matvec_cycling_us": "1-row product, cycling over 32 experts, us",
              "step_1_thread_ms": f"grouped GEMMs, 6 layers at {args.tokens} tokens, 1 thread, ms",
              "step_2_threads_ms": "the same, experts split over 2 threads, ms"}
    print(f"median (min-max) of {args.rounds} rounds, one torch thread each")
    for key, label in labels.items():
        values = [r[key] for r in rounds]
        print(f"{label:<62} {statistics.median(values):8.1f} ({min(values):.1f}-{max(values):.1f})")


if __name__ == "__main__":
    main()
