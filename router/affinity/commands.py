"""Command line: `affinity fit | plot | predict` and `place`, mounted by the switchyard CLI.

    switchyard affinity fit TRACES... -o matrix.npz [--rows EXPR]
    switchyard affinity plot --matrix matrix.npz --layer L [--placement P] -o out.png
    switchyard affinity predict --traces FILE [--fit EXPR] [--eval EXPR] [--distance D] [--placement FILE | --groups G]
                               [--batch-tokens N] [--json]
    switchyard place --traces FILE --groups G [--replicas R] [--fit EXPR] [--eval EXPR] [--robust] [--json] [-o P]
    switchyard place --live URL [--apply] [--min-gain X] [--placement P] [--api-key K] [--json]

`register(subparsers)` adds them to a parent parser; every subcommand sets `func(args) -> exit code`.
`main(argv)` runs them standalone: `python -m switchyard.router.affinity.commands place ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from switchyard.router.affinity.affinity_placement import affinity_placement
from switchyard.router.affinity.load_forecast import load_forecast_error
from switchyard.router.affinity.matrix import AffinityMatrix, fit_affinity
from switchyard.router.affinity.metrics import evaluate_placement
from switchyard.router.affinity.placement import Placement
from switchyard.router.affinity.plot import plot_layer
from switchyard.router.affinity.neighbours import NEIGHBOURS, fit_neighbours
from switchyard.router.affinity.prediction import fit_predictor, prediction_recall
from switchyard.router.affinity.robust import robust_affinity_placement
from switchyard.router.affinity.strategies import EplbHierarchy, contiguous, eplb, round_robin
from switchyard.router.affinity.traces import RoutingTrace, read_traces


@dataclass(frozen=True)
class Split:
    fit: RoutingTrace
    evaluate: RoutingTrace


def split_trace(trace: RoutingTrace, fit_expr: str | None, eval_expr: str | None) -> Split:
    """Rows to fit on and rows to evaluate on. Defaults: the first half of the sequences to fit, and
    whatever is not fitted to evaluate, so the two never overlap unless both are given."""
    if fit_expr is None:
        sequences = np.unique(trace.seq_id)
        fit_mask = trace.seq_id < sequences[len(sequences) // 2] if len(sequences) > 1 else np.ones(trace.num_rows, bool)
    else:
        fit_mask = trace.filter_mask(fit_expr)
    eval_mask = ~fit_mask if eval_expr is None else trace.filter_mask(eval_expr)
    if not fit_mask.any() or not eval_mask.any():
        raise SystemExit(f"empty split: {fit_mask.sum()} rows to fit, {eval_mask.sum()} rows to evaluate")
    return Split(trace.select(fit_mask), trace.select(eval_mask))


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
    if args.live:  # a serving app: its router fits on its own recent routing (cluster/place_live.py)
        from switchyard.cluster.place_live import run_live

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


def run_fit(args: argparse.Namespace) -> int:
    trace = read_traces(args.traces)
    if args.rows:
        trace = trace.filter_rows(args.rows)
    matrix = fit_affinity(trace)
    matrix.save(args.output)
    print(f"fitted {matrix.num_layers} layers x {matrix.num_experts} experts from {trace.num_rows} rows -> {args.output}")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    matrix = AffinityMatrix.load(args.matrix)
    placement = Placement.load(args.placement) if args.placement else None
    plot_layer(matrix, args.layer, args.output, placement)
    print(f"wrote {args.output}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    split = split_trace(read_traces(args.traces), args.fit, args.eval)
    matrix = fit_affinity(split.fit)
    fit = split.fit.aligned()
    predictor = fit_predictor(fit, args.distance, args.history)
    neighbours = fit_neighbours(fit, args.neighbours)
    evaluate = split.evaluate.aligned()
    report = prediction_recall(matrix, predictor, neighbours, evaluate, args.distance)
    placement = _forecast_placement(args, matrix)
    load = load_forecast_error(matrix, predictor, neighbours, evaluate, placement, args.batch_tokens, args.distance)
    if args.json:
        doc = {key: np.asarray(value).tolist() for key, value in asdict(report).items()}
        doc["load_forecast"] = {key: np.asarray(value).tolist() for key, value in asdict(load).items()}
        doc["load_forecast"]["placement"] = placement.strategy
        print(json.dumps(doc, indent=1))
        return 0
    print(f"recall@{matrix.top_k} of the experts d MoE layers ahead (held-out rows: {split.evaluate.num_rows}); "
          f"fitted = ridge, ensemble = neighbours + ridge")
    columns = ("popularity", "transition", "fitted", "neighbours", "ensemble")
    print("distance  " + "  ".join(f"{name:>10}" for name in columns))
    for i, d in enumerate(report.distances):
        print(f"{d:8d}  " + "  ".join(f"{getattr(report, name)[i]:10.3f}" for name in columns))
    print(f"\nper-group load forecast d layers ahead, batches of {args.batch_tokens} tokens, "
          f"{placement.num_groups} groups ({placement.strategy}): sum|forecast - actual| / sum actual (lower is better)")
    columns = ("popularity", "transition", "ensemble")
    print("distance  " + "  ".join(f"{name:>10}" for name in columns))
    for i, d in enumerate(load.distances):
        print(f"{d:8d}  " + "  ".join(f"{getattr(load, name)[i]:10.3f}" for name in columns))
    return 0


def _forecast_placement(args: argparse.Namespace, matrix: AffinityMatrix) -> Placement:
    """The placement whose group loads are forecast: a file, or an affinity placement fitted on the same rows
    (by default with the most groups of 8, 4, 2, 1 that divide the experts)."""
    if args.placement:
        return Placement.load(args.placement)
    groups = args.groups or next(g for g in (8, 4, 2, 1) if matrix.num_experts % g == 0)
    return affinity_placement(matrix, groups)


def _add_split_options(parser: argparse.ArgumentParser, traces_required: bool = True) -> None:
    parser.add_argument("--traces", nargs="+", required=traces_required, help="Parquet trace file(s)")
    parser.add_argument("--fit", help='rows to fit on, e.g. "seq_id<16" (default: first half of the sequences)')
    parser.add_argument("--eval", help='rows to evaluate on, e.g. "seq_id>=16" (default: the rows not fitted)')
    parser.add_argument("--json", action="store_true", help="print machine-readable results")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `affinity {fit,plot,predict}` and `place` to a CLI's subparsers."""
    affinity = subparsers.add_parser("affinity", help="fit, plot and test the expert affinity matrix")
    commands = affinity.add_subparsers(dest="affinity_command", required=True)

    fit = commands.add_parser("fit", help="fit an affinity matrix from routing traces")
    fit.add_argument("traces", nargs="+", help="Parquet trace file(s)")
    fit.add_argument("-o", "--output", required=True, help="matrix file to write (.npz)")
    fit.add_argument("--rows", help='only rows matching this filter, e.g. "seq_id<16"')
    fit.set_defaults(func=run_fit)

    plot = commands.add_parser("plot", help="heatmaps of one layer's co-activation and transition")
    plot.add_argument("--matrix", required=True)
    plot.add_argument("--layer", type=int, required=True, help="MoE layer id")
    plot.add_argument("--placement", help="placement JSON whose groups order and divide the experts")
    plot.add_argument("-o", "--output", required=True, help="PNG file to write")
    plot.set_defaults(func=run_plot)

    predict = commands.add_parser("predict", help="recall of later layers' experts predicted from earlier routing")
    _add_split_options(predict)
    predict.add_argument("--distance", type=int, default=3, help="predict up to this many MoE layers ahead")
    predict.add_argument("--history", type=int, default=2, help="routed layers the fitted predictor looks back on")
    predict.add_argument("--neighbours", type=int, default=NEIGHBOURS, help="fit tokens the neighbour predictor asks")
    predict.add_argument("--placement", help="placement JSON whose group loads to forecast (default: affinity, fitted)")
    predict.add_argument("--groups", type=int, help="groups of the fitted affinity placement (default: 8 if it divides)")
    predict.add_argument("--batch-tokens", type=int, default=32, help="tokens per forecast batch")
    predict.set_defaults(func=run_predict)

    place = subparsers.add_parser("place", help="compare placement strategies on held-out traces, write one; or "
                                                "re-place a serving app (--live)")
    _add_split_options(place, traces_required=False)
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
    place.set_defaults(func=run_place)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard", description=__doc__.splitlines()[0])
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as error:  # bad filter, bad placement file, sizes that do not divide...
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
