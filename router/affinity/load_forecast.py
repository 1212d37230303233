"""How well predicted experts forecast each expert group's load a few layers ahead, batch by batch.

The router knows a batch's routing at layer l before it runs layer l+1. From predicted picks it can tell
how many (token, expert) assignments each group will get at l+d, before the gate runs there: what a
prefetcher or an autoscaler that acts ahead of queues needs. This scores that forecast on held-out routing:

    error = sum_g |forecast_g - actual_g| / sum_g actual_g        (0 = exact; averaged over batches and layers)

for three sources of expected picks: popularity (no routing at all), the transition chain, and the
neighbours + ridge ensemble. Every source's rows are scaled to top_k picks, so only the split over groups
differs between them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from switchyard.router.affinity.aligned import AlignedRouting, multi_hot
from switchyard.router.affinity.matrix import AffinityMatrix
from switchyard.router.affinity.neighbours import ENSEMBLE_WEIGHT, NeighbourPredictor
from switchyard.router.affinity.placement import Placement
from switchyard.router.affinity.prediction import ExpertPredictor, forecast_group_load, predicted_scores


@dataclass(frozen=True)
class LoadForecastReport:
    distances: np.ndarray  # [D] 1..D
    batch_tokens: int
    popularity: np.ndarray  # [D] mean relative error of each source's per-group forecast
    transition: np.ndarray  # [D]
    ensemble: np.ndarray  # [D]


def as_expected_picks(scores: np.ndarray, top_k: int) -> np.ndarray:
    """[T, E] scores -> [T, E] non-negative expected picks, top_k per token (a ridge fit can go negative)."""
    clipped = np.clip(scores, 0.0, None)
    total = clipped.sum(axis=1, keepdims=True)
    uniform = np.full_like(clipped, top_k / clipped.shape[1])
    return np.where(total > 0, clipped * top_k / np.where(total > 0, total, 1.0), uniform)


def relative_load_error(forecast: np.ndarray, actual: np.ndarray) -> float:
    """Per-group loads [G] -> sum |forecast - actual| / sum actual."""
    return float(np.abs(forecast - actual).sum() / max(actual.sum(), 1e-12))


def load_forecast_error(
    matrix: AffinityMatrix,
    predictor: ExpertPredictor,
    neighbours: NeighbourPredictor,
    routing: AlignedRouting,
    placement: Placement,
    batch_tokens: int = 32,
    max_distance: int = 3,
    ensemble_weight: float = ENSEMBLE_WEIGHT,
) -> LoadForecastReport:
    """Forecast error on (held-out) `routing`, cut into consecutive batches of `batch_tokens` tokens."""
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
    k, t = matrix.top_k, routing.num_tokens
    batches = [slice(start, min(start + batch_tokens, t)) for start in range(0, t, batch_tokens)]
    rows = []
    for d in range(1, max_distance + 1):
        per_layer = []
        for l, scores in predicted_scores(matrix, predictor, neighbours, routing, d, ensemble_weight):
            target = int(routing.layers[l + d])
            sources = [as_expected_picks(scores[name], k) for name in ("popularity", "transition", "ensemble")]
            actual = multi_hot(routing.expert_ids[l + d], routing.num_experts)  # [T, E]
            errors = []
            for b in batches:
                actual_load = forecast_group_load(actual[b].sum(0), placement, target)  # [G]
                errors.append([relative_load_error(forecast_group_load(source[b].sum(0), placement, target), actual_load)
                               for source in sources])
            per_layer.append(np.mean(errors, axis=0))
        rows.append(np.mean(per_layer, axis=0) if per_layer else np.full(3, np.nan))
    table = np.array(rows)  # [D, 3]
    return LoadForecastReport(np.arange(1, max_distance + 1), batch_tokens, *table.T)
