"""Time the router's per-layer replica choice (assign_replicas) at DeepSeek-V3 scale.

    python scripts/dispatch_bench.py [--tokens 256] [--replicas 64]

256 experts, top-8, 64 groups, an affinity placement with `--replicas` replica slots per layer.
"""

import argparse
import time

import torch

from switchyard.router.affinity.affinity_placement import affinity_placement
from switchyard.router.affinity.dispatch import DispatchTables, assign_replicas
from switchyard.router.affinity.matrix import fit_affinity
from switchyard.router.affinity.synthetic import synthetic_trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256, help="tokens per call (one micro-batch)")
    parser.add_argument("--replicas", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)

    trace = synthetic_trace(num_layers=2, num_experts=256, top_k=8, num_sequences=16, seq_len=64, num_topics=32)
    placement = affinity_placement(fit_affinity(trace), num_groups=64, replica_slots=args.replicas)
    tables = DispatchTables.from_placement(placement)
    ids = torch.from_numpy(trace.aligned().expert_ids[0][: args.tokens])  # [T, k]
    load = torch.zeros(64)
    assign_replicas(ids, 0, tables, load)  # warm-up
    start = time.perf_counter()
    for _ in range(args.repeat):
        assign_replicas(ids, 0, tables, torch.zeros(64))
    per_call = (time.perf_counter() - start) / args.repeat
    replicated = int((placement.replica_counts()[0] > 1).sum())
    print(f"assign_replicas: {args.tokens} tokens x top-8, {replicated} replicated experts: "
          f"{per_call * 1e3:.2f} ms per call")


if __name__ == "__main__":
    main()
