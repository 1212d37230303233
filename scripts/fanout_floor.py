"""How low can fan-out go on flame-moe with 8 groups of 8 experts and no replicas? An optimistic floor.

    python scripts/fanout_floor.py [--traces PATH] [--groups 8] [--steps 60000] [--balance 1.05]

Cheats on purpose: it fits on the very rows it measures (seq_id >= 16), and anneals expert swaps on
the exact fan-out of those tokens instead of a pairwise proxy, keeping every group's load within
`--balance` x mean. No placement fitted on other rows should beat this; it backs the claim in
tests/affinity/test_targets.py that fan-out <= 3.0 is out of reach at equal memory per group.
"""

import argparse
from pathlib import Path

import numpy as np

from switchyard.router.affinity.matrix import fit_affinity
from switchyard.router.affinity.partition import partition_layer
from switchyard.router.affinity.traces import read_traces

DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "traces" / "flame-moe-290m.parquet"


def anneal_layer(hot: np.ndarray, groups: np.ndarray, num_groups: int, balance: float, steps: int, seed: int) -> float:
    """hot [T, E] picks, groups [E] start -> best mean fan-out reached by swaps under the load bound."""
    rng = np.random.default_rng(seed)
    popularity = hot.mean(0)
    limit = balance * popularity.sum() / num_groups
    hits = hot @ np.eye(num_groups)[groups]  # [T, G] picks per group
    load = np.bincount(groups, weights=popularity, minlength=num_groups)
    current = best = (hits > 0).sum(1).mean()
    for step in range(steps):
        temperature = 0.02 * (1 - step / steps) + 1e-5
        a, b = rng.integers(len(groups), size=2)
        ga, gb = groups[a], groups[b]
        if ga == gb:
            continue
        load_a, load_b = load[ga] - popularity[a] + popularity[b], load[gb] + popularity[a] - popularity[b]
        if max(load_a, load_b) > limit:
            continue
        col_a, col_b = hits[:, ga] - hot[:, a] + hot[:, b], hits[:, gb] + hot[:, a] - hot[:, b]
        delta = ((col_a > 0).mean() - (hits[:, ga] > 0).mean()) + ((col_b > 0).mean() - (hits[:, gb] > 0).mean())
        if delta < 0 or rng.random() < np.exp(-delta / temperature):
            hits[:, ga], hits[:, gb], load[ga], load[gb] = col_a, col_b, load_a, load_b
            groups[a], groups[b] = gb, ga
            current += delta
            best = min(best, current)
    return float(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default=str(DEFAULT))
    parser.add_argument("--rows", default="seq_id>=16", help="rows to fit on and measure on")
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60000)
    parser.add_argument("--balance", type=float, default=1.05)
    args = parser.parse_args()

    trace = read_traces([args.traces]).filter_rows(args.rows)
    matrix, routing = fit_affinity(trace), trace.aligned()
    floors = []
    for l in range(routing.num_layers):
        start = partition_layer(matrix.coactivation[l], matrix.popularity[l], args.groups, args.balance - 1)
        floors.append(anneal_layer(routing.multi_hot()[l], start, args.groups, args.balance, args.steps, seed=l))
        print(f"layer {routing.layers[l]}: fan-out floor {floors[-1]:.3f}", flush=True)
    print(f"mean fan-out floor {np.mean(floors):.3f} ({args.groups} groups, load <= {args.balance} x mean, no replicas)")


if __name__ == "__main__":
    main()
