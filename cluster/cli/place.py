"""`switchyard place`: compare placement strategies on held-out traces and write one; or re-place a serving app.

    switchyard place --traces FILE --groups G [--replicas R] [--fit EXPR] [--eval EXPR] [--robust] [--json] [-o P]
    switchyard place --live URL [--apply] [--min-gain X] [--placement P] [--api-key K] [--json]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from typing import Sequence

from switchyard.cluster.cli.affinity import Split, add_split_options, exits_on_bad_input, split_trace
from switchyard.router.affinity.affinity_placement import affinity_placement
from switchyard.router.affinity.matrix import fit_affinity
from switchyard.router.affinity.metrics import evaluate_placement
from switchyard.router.affinity.placement import Placement
from switchyard.router.affinity.robust import robust_affinity_placement
from switchyard.router.affinity.strategies import EplbHierarchy, contiguous, eplb, round_robin
from switchyard.router.affinity.traces import read_traces


@dataclass(frozen=True)
class StrategyRow:
    strategy: str
    replica_slots: int  # extra experts per layer actually placed (summed over groups, mean over layers)
    fan_out: float
    imbalance: float
    bytes_per_token: float
    group_switches: float


def compare_strategies(
    split: Split,
    num_groups: int,
    replica_slots: int,
    hidden_size: int,
    bytes_per_element: int,
    num_nodes: int,
    robust: bool = False,
) -> tuple[list[StrategyRow], Placement]:
    """Fit on split.fit, score every strategy on split.evaluate -> (rows, the placement to write: the
    affinity one, or with `robust` the shift-robust one, which is then scored too)."""
    matrix = fit_affinity(split.fit)
    layers, experts = [int(layer) for layer in matrix.layers], matrix.num_experts
    placements = [contiguous(layers, experts, num_groups), round_robin(layers, experts, num_groups)]
    placements.append(eplb(matrix.popularity, layers, num_groups, replica_slots))
    if num_nodes > 1:  # EPLB's node level only means something with several nodes
        hierarchy = EplbHierarchy(num_nodes=num_nodes, num_expert_groups=num_nodes)
        placements.append(eplb(matrix.popularity, layers, num_groups, replica_slots, hierarchy))
    chosen = affinity_placement(matrix, num_groups, replica_slots)
    placements.append(chosen)
    if robust:
        chosen = robust_affinity_placement(split.fit, num_groups, replica_slots)
        placements.append(chosen)
    routing = split.evaluate.aligned()
    rows = []
    for placement in placements:
        report = evaluate_placement(placement, routing, hidden_size, bytes_per_element)
        rows.append(
            StrategyRow(
                strategy=placement.strategy,
                replica_slots=int(round((placement.replica_counts().sum(1) - experts).mean())),
                fan_out=report.mean_fan_out,
                imbalance=report.mean_imbalance,
                bytes_per_token=report.mean_bytes_per_token,
                group_switches=report.mean_group_switches,
            )
        )
    return rows, chosen


def format_table(rows: Sequence[StrategyRow]) -> str:
    header = ("strategy", "replicas", "fan-out", "imbalance", "bytes/token", "switches")
    cells = [header] + [
        (r.strategy, str(r.replica_slots), f"{r.fan_out:.3f}", f"{r.imbalance:.3f}", f"{r.bytes_per_token:,.0f}",
         f"{r.group_switches:.3f}")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
    return "\n".join(lines)


def run_place(args: argparse.Namespace) -> int:
    if args.live:  # a serving app: its router fits on its own recent routing (cluster/cli/place_live.py)
        from switchyard.cluster.cli.place_live import run_live

        return run_live(args)
    missing = [flag for flag, value in (("--traces", args.traces), ("--groups", args.groups)) if value is None]
    if missing:
        raise SystemExit(f"switchyard place: {' and '.join(missing)} needed (or --live URL)")
    split = split_trace(read_traces(args.traces), args.fit, args.eval)
    rows, chosen = compare_strategies(
        split, args.groups, args.replicas, args.hidden_size, args.bytes_per_element, args.nodes, args.robust
    )
    if args.json:
        print(json.dumps({"fit_rows": split.fit.num_rows, "eval_rows": split.evaluate.num_rows,
                          "groups": args.groups, "results": [asdict(r) for r in rows]}, indent=1))
    else:
        print(f"fit on {split.fit.num_rows} rows, evaluated on {split.evaluate.num_rows} rows; "
              f"{args.groups} groups, {args.replicas} replica slots per layer; bytes/token = fan-out x "
              f"{args.hidden_size} x {args.bytes_per_element} B, one way, per layer")
        print(format_table(rows))
    if args.output:
        chosen.save(args.output)
        if not args.json:
            print(f"wrote {chosen.strategy} placement to {args.output}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `place` to a CLI's subparsers."""
    place = subparsers.add_parser("place", help="compare placement strategies on held-out traces, write one; or "
                                                "re-place a serving app (--live)")
    add_split_options(place, traces_required=False)
    place.add_argument("--groups", type=int, help="expert groups (deployments)")
    place.add_argument("--replicas", type=int, default=0, help="replica slots per layer, a multiple of --groups")
    place.add_argument("--hidden-size", type=int, default=4096, help="model hidden size, for bytes/token")
    place.add_argument("--bytes-per-element", type=int, default=2, help="activation bytes per element (bf16: 2)")
    place.add_argument("--nodes", type=int, default=1, help="nodes the groups span; > 1 adds eplb-hierarchical")
    place.add_argument("--robust", action="store_true",
                       help="also fit the shift-robust affinity placement (router/affinity/robust.py) and write that one")
    place.add_argument("-o", "--output", help="write the affinity placement JSON here (--live: the proposed one)")
    live = place.add_argument_group("live re-placement (POST /v1/switchyard/placement of a serving app)")
    live.add_argument("--live", metavar="URL", help="the app's base URL, e.g. http://127.0.0.1:8000: its router fits a "
                                                   "placement on its recent routing and shows it against the current one")
    live.add_argument("--apply", action="store_true", help="apply it when the gain passes --min-gain (default: dry run)")
    live.add_argument("--min-gain", type=float, default=0.02,
                      help="least relative drop of the busiest group's load per token (fan-out x imbalance), "
                           "1 - proposed / current, to apply (default 0.02)")
    live.add_argument("--force", action="store_true", help="apply whatever the gain (min_gain null)")
    live.add_argument("--placement", dest="explicit_placement", metavar="FILE",
                      help="propose this placement JSON instead of fitting one")
    live.add_argument("--api-key", default=None, help="the app's API key (default: $SWITCHYARD_API_KEY)")
    live.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the answer (a switch)")
    place.set_defaults(func=exits_on_bad_input(run_place))
