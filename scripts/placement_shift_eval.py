"""Placement under a shift of traffic: every strategy fitted on one split and measured on another, one table.

    python scripts/placement_shift_eval.py [--out runs/placement-shift]

Scenarios (router/affinity/shifts.py): the real FLAME-MoE traces split by sequence, by routing cluster and
with a tilted popularity; the built-in model's routing on one corpus measured on the other (traces recorded
with `switchyard trace` on first use, cached under --out). Columns: fan-out (groups per token) and imbalance
(max / mean group load) under the router's dispatch rule, and the replica slots each strategy really used.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from switchyard.router.affinity.affinity_placement import affinity_placement
from switchyard.router.affinity.matrix import fit_affinity
from switchyard.router.affinity.metrics import evaluate_placement
from switchyard.router.affinity.robust import robust_affinity_placement
from switchyard.router.affinity.shifts import ShiftedSplit, cluster_split, sequence_split, tilted
from switchyard.router.affinity.strategies import contiguous, eplb
from switchyard.router.affinity.traces import read_traces

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data"
CORPORA = {"wiki": SHARED / "corpus" / "wiki-sample.txt", "news": SHARED / "corpus" / "lee-background.txt"}


@dataclass(frozen=True)
class Scenario:
    split: ShiftedSplit
    num_groups: int
    slot_counts: tuple[int, ...]


def demo_trace(corpus: str, out: Path):
    path = out / f"demo-{corpus}.parquet"
    if not path.exists():
        print(f"recording the built-in model's routing on {CORPORA[corpus].name} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "switchyard.cluster.cli", "trace", "--text", str(CORPORA[corpus]),
                        "--seq-len", "64", "--num-seqs", "64", "-o", str(path)], check=True, stdout=sys.stderr)
    return read_traces([path])


def scenarios(out: Path) -> list[Scenario]:
    flame = read_traces([SHARED / "traces" / "flame-moe-290m.parquet"])
    by_sequence = sequence_split(flame, "flame: seq<16 -> seq>=16", "seq_id<16", "seq_id>=16")
    wiki, news = demo_trace("wiki", out), demo_trace("news", out)
    found = [
        Scenario(by_sequence, 8, (0, 8, 16)),
        Scenario(cluster_split(flame, "flame: routing cluster A -> B"), 8, (0, 8, 16)),
        Scenario(ShiftedSplit("flame: seq<16 -> tilted seq>=16", by_sequence.fit, tilted(by_sequence.evaluate, 0.5)),
                 8, (0, 8, 16)),
        Scenario(ShiftedSplit("demo: wiki -> news", wiki, news.aligned()), 4, (0, 4, 8)),
        Scenario(ShiftedSplit("demo: news -> wiki", news, wiki.aligned()), 4, (0, 4, 8)),
    ]
    return found


def rows(scenario: Scenario):
    matrix = fit_affinity(scenario.split.fit)
    layers, experts = [int(layer) for layer in matrix.layers], matrix.num_experts
    groups = scenario.num_groups
    for slots in scenario.slot_counts:
        robust = robust_affinity_placement(scenario.split.fit, groups, slots)
        placements = [eplb(matrix.popularity, layers, groups, slots), affinity_placement(matrix, groups, slots),
                      robust]
        if slots == 0:
            placements.insert(0, contiguous(layers, experts, groups))
        for placement in placements:
            report = evaluate_placement(placement, scenario.split.evaluate, hidden_size=1)
            used = int(round((placement.replica_counts().sum(1) - experts).mean()))
            yield (scenario.split.name, str(slots), placement.strategy, str(used),
                   f"{report.mean_fan_out:.3f}", f"{report.mean_imbalance:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "placement-shift"), help="where recorded traces are cached")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = ("scenario", "slots", "strategy", "used", "fan-out", "imbalance")
    table = [header]
    for scenario in scenarios(out):
        table += list(rows(scenario))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
