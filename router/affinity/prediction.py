"""Predict a token's experts at layers l+1..l+D from its routing so far, without running those layers.

Uses: prefetching offloaded experts, and forecasting per-group load so autoscaling acts before queues
grow. Five predictors, best last:

- popularity: the k most popular experts of layer l+d (what you know with no routing at all);
- transition: propagate the token's picks through the fitted transition matrices,
  P(l+d) = (x_l / k) T_l T_{l+1} ... (x_l = the token's multi-hot picks at layer l);
- fitted: a ridge regression per (layer, distance) from the token's picks *and* gate weights at its
  last `history` layers to its picks at l+d. It uses all top-k picks jointly and the path the token
  took, where the transition chain forgets everything but the current layer's marginal;
- neighbours (neighbours.py): the picks at l+d of the fit tokens whose whole routing path up to l is
  most like the token's: non-linear in the path, where the ridge fit is linear in its last layers;
- ensemble: the neighbour and ridge scores, each row-normalised, added (they err differently).

recall@k = |predicted top-k ∩ actual top-k| / k, averaged over tokens and layers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from switchyard.router.affinity.aligned import AlignedRouting, multi_hot
from switchyard.router.affinity.matrix import AffinityMatrix
from switchyard.router.affinity.neighbours import ENSEMBLE_WEIGHT, NeighbourPredictor, ensemble_scores
from switchyard.router.affinity.placement import Placement


def transition_scores(matrix: AffinityMatrix, expert_ids: np.ndarray, layer: int, distance: int) -> np.ndarray:
    """expert_ids [T, k] at `layer` -> [T, E]: expected picks of each expert at layer + distance steps."""
    l = matrix.layer_index(layer)
    if l + distance >= matrix.num_layers:
        raise ValueError(f"layer {layer} + {distance} MoE layers is past the last layer {matrix.layers[-1]}")
    distribution = multi_hot(expert_ids, matrix.num_experts) / matrix.top_k  # [T, E], rows sum to 1
    for step in range(distance):
        distribution = distribution @ matrix.transition[l + step]
    return distribution * matrix.top_k


def _features(expert_ids: np.ndarray, gate_weights: np.ndarray, num_experts: int, history: int) -> np.ndarray:
    """[h, T, k] routing, most recent layer last -> [T, history * 2E + 1]; missing older layers are 0."""
    h, num_tokens, _ = expert_ids.shape
    blocks = []
    for back in range(history):
        if back < h:
            ids, gates = expert_ids[h - 1 - back], gate_weights[h - 1 - back]
            hot = multi_hot(ids, num_experts)  # [T, E]
            weight = np.zeros_like(hot)
            np.put_along_axis(weight, ids.astype(np.int64), gates, axis=1)
            blocks += [hot, weight]
        else:
            blocks += [np.zeros((num_tokens, num_experts), np.float32)] * 2
    return np.concatenate(blocks + [np.ones((num_tokens, 1), np.float32)], axis=1)


@dataclass(frozen=True)
class ExpertPredictor:
    layers: np.ndarray  # [L] layer ids
    num_experts: int
    top_k: int
    history: int
    weights: np.ndarray  # [L, D, F, E] float32, F = history * 2E + 1; zero where l + d is past the end

    @property
    def max_distance(self) -> int:
        return self.weights.shape[1]

    def scores(self, expert_ids: np.ndarray, gate_weights: np.ndarray, layer: int, distance: int) -> np.ndarray:
        """Routing [h, T, k] of the layers up to and including `layer` (most recent last) -> [T, E]."""
        l = int(np.flatnonzero(self.layers == layer)[0])
        if not 1 <= distance <= self.max_distance or l + distance >= len(self.layers):
            raise ValueError(f"no fitted predictor from layer {layer} at distance {distance}")
        features = _features(expert_ids, gate_weights, self.num_experts, self.history)
        return features @ self.weights[l, distance - 1]


def fit_predictor(
    routing: AlignedRouting, max_distance: int = 3, history: int = 2, ridge: float = 3.0
) -> ExpertPredictor:
    """Closed-form ridge regression for every (layer, distance) pair in `routing`."""
    num_layers, e = routing.num_layers, routing.num_experts
    targets = routing.multi_hot()  # [L, T, E]
    weights = np.zeros((num_layers, max_distance, history * 2 * e + 1, e), np.float32)
    for l in range(num_layers - 1):
        x = _features(routing.expert_ids[: l + 1], routing.gate_weights[: l + 1], e, history).astype(np.float64)
        distances = min(max_distance, num_layers - 1 - l)
        y = np.concatenate([targets[l + d] for d in range(1, distances + 1)], axis=1)  # [T, distances * E]
        solved = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)  # [F, distances * E]
        weights[l, :distances] = solved.reshape(-1, distances, e).transpose(1, 0, 2)
    return ExpertPredictor(routing.layers.copy(), e, routing.top_k, history, weights)


def top_k_of(scores: np.ndarray, k: int) -> np.ndarray:
    """scores [T, E] -> the k best expert ids per token [T, k] (ties: lower id)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def recall_at_k(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Mean over tokens of |predicted[t] ∩ actual[t]| / k; both [T, k] expert ids."""
    hits = (predicted[:, :, None] == actual[:, None, :]).any(axis=2)  # [T, k]
    return float(hits.mean())


@dataclass(frozen=True)
class RecallReport:
    distances: np.ndarray  # [D] 1..D
    popularity: np.ndarray  # [D] recall@k of each predictor, averaged over start layers
    transition: np.ndarray  # [D]
    fitted: np.ndarray  # [D] the ridge fit
    neighbours: np.ndarray  # [D]
    ensemble: np.ndarray  # [D] neighbours + ridge


def predicted_scores(
    matrix: AffinityMatrix,
    predictor: ExpertPredictor,
    neighbours: NeighbourPredictor,
    routing: AlignedRouting,
    distance: int,
    ensemble_weight: float = ENSEMBLE_WEIGHT,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """For every start layer index l of `routing` with a layer `distance` later: (l, each predictor's scores
    [T, E] for layer l + distance), predictors named as in RecallReport. One layer at a time, to bound memory."""
    for l in range(routing.num_layers - distance):
        layer, history = int(routing.layers[l]), routing.expert_ids[: l + 1]
        popularity = matrix.popularity[matrix.layer_index(layer) + distance]  # [E]
        ridge = predictor.scores(history, routing.gate_weights[: l + 1], layer, distance)
        votes = neighbours.scores(history, layer, distance)
        yield l, {
            "popularity": np.broadcast_to(popularity, (routing.num_tokens, len(popularity))),
            "transition": transition_scores(matrix, routing.expert_ids[l], layer, distance),
            "fitted": ridge,
            "neighbours": votes,
            "ensemble": ensemble_scores(votes, ridge, ensemble_weight),
        }


def prediction_recall(
    matrix: AffinityMatrix,
    predictor: ExpertPredictor,
    neighbours: NeighbourPredictor,
    routing: AlignedRouting,
    max_distance: int = 3,
    ensemble_weight: float = ENSEMBLE_WEIGHT,
) -> RecallReport:
    """recall@top_k on (held-out) `routing` for every start layer that has a layer `distance` later."""
    names = ("popularity", "transition", "fitted", "neighbours", "ensemble")
    rows: list[tuple[float, ...]] = []
    for d in range(1, max_distance + 1):
        per_layer = [tuple(recall_at_k(top_k_of(scores[name], matrix.top_k), routing.expert_ids[l + d]) for name in names)
                     for l, scores in predicted_scores(matrix, predictor, neighbours, routing, d, ensemble_weight)]
        rows.append(tuple(np.mean(per_layer, axis=0)) if per_layer else (np.nan,) * len(names))
    table = np.array(rows)  # [D, 5]
    return RecallReport(np.arange(1, max_distance + 1), *table.T)


def forecast_group_load(expected_picks: np.ndarray, placement: Placement, layer: int) -> np.ndarray:
    """Expected (token, expert) assignments per group [G] from predicted picks.

    expected_picks [T, E] (or [E] summed over tokens): e.g. `transition_scores`, clipped predictor
    scores, or popularity x tokens. A replicated expert's picks are split evenly over its holders, which
    is where least-loaded dispatch drives them on average.
    """
    holds = placement.holds[placement.layer_index(layer)]  # [G, E]
    per_expert = expected_picks.reshape(-1, placement.num_experts).sum(axis=0)  # [E]
    return (holds / holds.sum(axis=0)) @ per_expert
