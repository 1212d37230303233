"""Shifted evaluations: fit a placement on one kind of traffic, measure it on another.

A placement is fitted on last week's routing and serves this week's. Measuring it on more of the same
text (a random split by sequence) flatters whatever chases the fit's statistics, so placement is also
scored on splits where the traffic really moves:

- `sequence_split`: fit on some sequences, measure on the others (same kind of text);
- `cluster_split`: sequences clustered in two by the experts they use (2-means on their per-layer
  expert histograms); fit on one cluster, measure on the other: a change of topic, from routing alone;
- `tilted`: the measured tokens resampled with weights exp(strength * sum of a random score of the
  experts they pick), so some experts become hotter and others colder than in the fit: a drift of
  popularity that keeps each token's real co-activation and cross-layer path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from switchyard.router.affinity.aligned import AlignedRouting
from switchyard.router.affinity.traces import RoutingTrace


@dataclass(frozen=True)
class ShiftedSplit:
    name: str
    fit: RoutingTrace
    evaluate: AlignedRouting


def sequence_split(trace: RoutingTrace, name: str, fit_expr: str, eval_expr: str) -> ShiftedSplit:
    return ShiftedSplit(name, trace.filter_rows(fit_expr), trace.filter_rows(eval_expr).aligned())


def sequence_counts(routing: AlignedRouting) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sequence ids [S], picks of each expert per sequence and layer [S, L, E], tokens per sequence [S])."""
    sequences, index = np.unique(routing.seq_id, return_inverse=True)
    counts = np.zeros((len(sequences), routing.num_layers, routing.num_experts))
    np.add.at(counts, index, routing.multi_hot().transpose(1, 0, 2))
    return sequences, counts, np.bincount(index, minlength=len(sequences))


def sequence_histograms(routing: AlignedRouting) -> tuple[np.ndarray, np.ndarray]:
    """(sequence ids [S], share of each sequence's picks per (layer, expert) [S, L*E])."""
    sequences, counts, _ = sequence_counts(routing)
    counts = counts.reshape(len(sequences), -1)
    return sequences, counts / counts.sum(1, keepdims=True)


def two_means(points: np.ndarray, rounds: int = 50) -> np.ndarray:
    """Cluster label 0/1 per point; starts from the two points farthest apart, so it is deterministic."""
    distance = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    a, b = np.unravel_index(int(np.argmax(distance)), distance.shape)
    centres = points[[a, b]]
    labels = None
    for _ in range(rounds):
        new = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1).argmin(1)
        if labels is not None and (new == labels).all():
            break
        labels = new
        centres = np.stack([points[labels == c].mean(0) if (labels == c).any() else centres[c] for c in (0, 1)])
    return labels


def cluster_split(trace: RoutingTrace, name: str) -> ShiftedSplit:
    """Fit on the larger routing cluster of sequences, measure on the other."""
    sequences, histograms = sequence_histograms(trace.aligned())
    labels = two_means(histograms)
    fit_label = int(np.bincount(labels, minlength=2).argmax())
    fit_rows = np.isin(trace.seq_id, sequences[labels == fit_label])
    return ShiftedSplit(name, trace.select(fit_rows), trace.select(~fit_rows).aligned())


def tilted(routing: AlignedRouting, strength: float, seed: int = 0) -> AlignedRouting:
    """The tokens of `routing` resampled (with replacement, as many) under a random popularity drift."""
    rng = np.random.default_rng(seed)
    score = rng.normal(size=(routing.num_layers, routing.num_experts))  # [L, E]
    layer_index = np.arange(routing.num_layers)[:, None, None]
    token_score = score[layer_index, routing.expert_ids].sum((0, 2))  # [T]
    weight = np.exp(strength * (token_score - token_score.max()))
    keep = np.sort(rng.choice(routing.num_tokens, size=routing.num_tokens, p=weight / weight.sum()))
    return replace(
        routing,
        seq_id=routing.seq_id[keep],
        pos=routing.pos[keep],
        expert_ids=routing.expert_ids[:, keep],
        gate_weights=routing.gate_weights[:, keep],
    )
