"""`switchyard affinity fit | plot | predict`: the expert affinity matrix from routing traces, offline.

    switchyard affinity fit TRACES... -o matrix.npz [--rows EXPR]
    switchyard affinity plot --matrix matrix.npz --layer L [--placement P] -o out.png
    switchyard affinity predict --traces FILE [--fit EXPR] [--eval EXPR] [--distance D] [--placement FILE | --groups G]
                               [--batch-tokens N] [--json]

`register(subparsers)` adds them to a parent parser; every subcommand sets `func(args) -> exit code`.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import asdict, dataclass

import numpy as np

from switchyard.router.affinity.affinity_placement import affinity_placement
from switchyard.router.affinity.load_forecast import load_forecast_error
from switchyard.router.affinity.matrix import AffinityMatrix, fit_affinity
from switchyard.router.affinity.placement import Placement
from switchyard.router.affinity.plot import plot_layer
from switchyard.router.affinity.neighbours import NEIGHBOURS, fit_neighbours
from switchyard.router.affinity.prediction import fit_predictor, prediction_recall
from switchyard.router.affinity.traces import RoutingTrace, read_traces


def exits_on_bad_input(run):
    """A bad filter, placement file or size that does not divide is the user's to fix: one line, exit code 2."""

    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return wrapped


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


def add_split_options(parser: argparse.ArgumentParser, traces_required: bool = True) -> None:
    parser.add_argument("--traces", nargs="+", required=traces_required, help="Parquet trace file(s)")
    parser.add_argument("--fit", help='rows to fit on, e.g. "seq_id<16" (default: first half of the sequences)')
    parser.add_argument("--eval", help='rows to evaluate on, e.g. "seq_id>=16" (default: the rows not fitted)')
    parser.add_argument("--json", action="store_true", help="print machine-readable results")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `affinity {fit,plot,predict}` to a CLI's subparsers."""
    affinity = subparsers.add_parser("affinity", help="fit, plot and test the expert affinity matrix")
    commands = affinity.add_subparsers(dest="affinity_command", required=True)

    fit = commands.add_parser("fit", help="fit an affinity matrix from routing traces")
    fit.add_argument("traces", nargs="+", help="Parquet trace file(s)")
    fit.add_argument("-o", "--output", required=True, help="matrix file to write (.npz)")
    fit.add_argument("--rows", help='only rows matching this filter, e.g. "seq_id<16"')
    fit.set_defaults(func=exits_on_bad_input(run_fit))

    plot = commands.add_parser("plot", help="heatmaps of one layer's co-activation and transition")
    plot.add_argument("--matrix", required=True)
    plot.add_argument("--layer", type=int, required=True, help="MoE layer id")
    plot.add_argument("--placement", help="placement JSON whose groups order and divide the experts")
    plot.add_argument("-o", "--output", required=True, help="PNG file to write")
    plot.set_defaults(func=exits_on_bad_input(run_plot))

    predict = commands.add_parser("predict", help="recall of later layers' experts predicted from earlier routing")
    add_split_options(predict)
    predict.add_argument("--distance", type=int, default=3, help="predict up to this many MoE layers ahead")
    predict.add_argument("--history", type=int, default=2, help="routed layers the fitted predictor looks back on")
    predict.add_argument("--neighbours", type=int, default=NEIGHBOURS, help="fit tokens the neighbour predictor asks")
    predict.add_argument("--placement", help="placement JSON whose group loads to forecast (default: affinity, fitted)")
    predict.add_argument("--groups", type=int, help="groups of the fitted affinity placement (default: 8 if it divides)")
    predict.add_argument("--batch-tokens", type=int, default=32, help="tokens per forecast batch")
    predict.set_defaults(func=exits_on_bad_input(run_predict))
