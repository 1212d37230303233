"""Choose the neighbour predictor's hyperparameters by cross-validation inside the fit split.

    python scripts/neighbour_selection.py [--traces PATH] [--fit "seq_id<16"] [--folds 4]   (about a minute)

Only the fit rows are read (default seq_id < 16, the rows tests/affinity/test_targets.py fits on); their
sequences are cut into `--folds` folds, each fold is predicted from the others, and recall@k is
averaged over folds, start layers and tokens. The held-out rows (seq_id >= 16) are never looked at, so
the defaults in router/affinity/neighbours.py that this chose are honest for the target test.
Prints the best settings by next-layer recall, and their recall at every distance. One set of neighbour
settings serves both predictors, so it is the ensemble's best (the predictor the router would use).
"""

import argparse
import itertools
from collections import defaultdict
from pathlib import Path

import numpy as np

from switchyard.router.affinity.aligned import AlignedRouting
from switchyard.router.affinity.neighbours import ensemble_scores, fit_neighbours
from switchyard.router.affinity.prediction import fit_predictor, recall_at_k, top_k_of
from switchyard.router.affinity.traces import read_traces

DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "traces" / "flame-moe-290m.parquet"
NEIGHBOURS = (5, 10, 15, 20, 30, 50)
DECAYS = (0.25, 0.5, 0.75, 1.0)
POWERS = (1.0, 2.0, 4.0, 6.0, 8.0)
RIDGE_WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)  # 0 = the neighbour predictor alone


def subset(routing: AlignedRouting, tokens: np.ndarray) -> AlignedRouting:
    return AlignedRouting(
        routing.layers, routing.seq_id[tokens], routing.pos[tokens], routing.expert_ids[:, tokens],
        routing.gate_weights[:, tokens], routing.num_experts,
    )


def cross_validate(routing: AlignedRouting, folds: int, max_distance: int) -> dict[tuple, np.ndarray]:
    """-> {(neighbours, decay, power, ridge_weight) or ("ridge",): recall@k [D], mean over folds and layers}."""
    recall: dict[tuple, list[list[float]]] = defaultdict(lambda: [[] for _ in range(max_distance)])
    for fold in np.array_split(np.unique(routing.seq_id), folds):
        held = np.isin(routing.seq_id, fold)
        fit, valid = subset(routing, np.flatnonzero(~held)), subset(routing, np.flatnonzero(held))
        ridge = fit_predictor(fit, max_distance)
        starts = [(d, l) for d in range(1, max_distance + 1) for l in range(routing.num_layers - d)]
        linear = {  # the ridge scores of every (distance, start layer), shared by the whole grid
            (d, l): ridge.scores(valid.expert_ids[: l + 1], valid.gate_weights[: l + 1], int(routing.layers[l]), d)
            for d, l in starts
        }
        for d, l in starts:
            recall[("ridge",)][d - 1].append(recall_at_k(top_k_of(linear[d, l], routing.top_k), valid.expert_ids[l + d]))
        for neighbours, decay, power in itertools.product(NEIGHBOURS, DECAYS, POWERS):
            memory = fit_neighbours(fit, neighbours, decay, power)
            for d, l in starts:
                votes = memory.scores(valid.expert_ids[: l + 1], int(routing.layers[l]), d)
                for weight in RIDGE_WEIGHTS:
                    predicted = top_k_of(ensemble_scores(votes, linear[d, l], weight), routing.top_k)
                    recall[(neighbours, decay, power, weight)][d - 1].append(recall_at_k(predicted, valid.expert_ids[l + d]))
    return {key: np.array([np.mean(per_d) for per_d in value]) for key, value in recall.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default=str(DEFAULT))
    parser.add_argument("--fit", default="seq_id<16", help="the only rows read")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--distance", type=int, default=3)
    args = parser.parse_args()
    routing = read_traces([args.traces]).filter_rows(args.fit).aligned()
    table = cross_validate(routing, args.folds, args.distance)
    print(f"{args.folds}-fold CV by sequence on {routing.num_tokens} fit tokens; recall@{routing.top_k} by distance")
    print("ridge fit alone: " + "  ".join(f"{value:.4f}" for value in table.pop(("ridge",))))
    for label, keys in (("neighbours alone", [k for k in table if k[3] == 0.0]),
                        ("ensemble", [k for k in table if k[3] > 0.0])):
        ranked = sorted(keys, key=lambda k: -table[k][0])
        print(f"best {label} (neighbours, decay, power, ridge weight):")
        for key in ranked[:8]:
            print(f"  {key}  " + "  ".join(f"{value:.4f}" for value in table[key]))
    chosen = max((k for k in table if k[3] > 0.0), key=lambda k: table[k][0])
    alone = (*chosen[:3], 0.0)
    print(f"chosen (best ensemble at distance 1): neighbours={chosen[0]} decay={chosen[1]} power={chosen[2]} "
          f"ridge weight={chosen[3]}; the neighbours alone at these settings: "
          + "  ".join(f"{value:.4f}" for value in table[alone]))


if __name__ == "__main__":
    main()
