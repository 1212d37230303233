"""Time affinity placement at DeepSeek-V3 scale: 61 MoE layers x 256 experts (top-8) into 64 groups.

    python scripts/place_scale_bench.py [--replicas 64] [--tokens 4096]

The matrix is fitted from a synthetic trace with topic structure (switchyard.router.affinity.synthetic);
only the placement is timed. Timing is printed, not asserted: tests check shapes, benchmarks speed.
"""

import argparse
import time

from switchyard.router.affinity.affinity_placement import affinity_placement
from switchyard.router.affinity.matrix import fit_affinity
from switchyard.router.affinity.metrics import evaluate_placement
from switchyard.router.affinity.strategies import contiguous, eplb
from switchyard.router.affinity.synthetic import synthetic_trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=61)
    parser.add_argument("--experts", type=int, default=256)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--groups", type=int, default=64)
    parser.add_argument("--replicas", type=int, default=64, help="replica slots per layer (0 for none)")
    parser.add_argument("--tokens", type=int, default=4096, help="synthetic tokens per layer (half fit, half eval)")
    args = parser.parse_args()

    sequences = 32
    trace = synthetic_trace(args.layers, args.experts, args.top_k, sequences, args.tokens // sequences, num_topics=32)
    half = f"seq_id<{sequences // 2}"
    matrix = fit_affinity(trace.filter_rows(half))
    held_out = trace.filter_rows(f"seq_id>={sequences // 2}").aligned()
    print(f"{args.layers} layers x {args.experts} experts, top-{args.top_k}, into {args.groups} groups")
    for slots in sorted({0, args.replicas}):
        start = time.perf_counter()
        placement = affinity_placement(matrix, args.groups, slots)
        seconds = time.perf_counter() - start
        report = evaluate_placement(placement, held_out, hidden_size=7168)
        baseline = evaluate_placement(eplb(matrix.popularity, list(matrix.layers), args.groups, slots), held_out, 7168)
        print(f"  replica slots {slots:3d}: affinity_placement {seconds:6.2f} s; held-out fan-out "
              f"{report.mean_fan_out:.2f} (eplb {baseline.mean_fan_out:.2f}), imbalance {report.mean_imbalance:.3f} "
              f"(eplb {baseline.mean_imbalance:.3f})")
    layers = list(matrix.layers)
    contiguous_fan_out = evaluate_placement(contiguous(layers, args.experts, args.groups), held_out, 7168).mean_fan_out
    print(f"  contiguous fan-out {contiguous_fan_out:.2f}")


if __name__ == "__main__":
    main()
