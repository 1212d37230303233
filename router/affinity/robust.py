"""Placement that holds up when traffic shifts: trade fan-out for balance, layer by layer, on evidence.

The affinity partition keeps co-activated experts together. Co-activated experts are mostly experts of
one topic, so when the mix of topics moves, their group gets hot together: on shifted traces the plain
partition measured up to 1.45 imbalance where EPLB kept 1.20 (scripts/placement_shift_eval.py).

Variance of a group's load across sequences is sum_{i, j in g} Cov[i, j], Cov = covariance over
sequences of each sequence's expert popularity. So penalising the partition's pair weights,

    pairs = C - penalty * scale * Cov        (scale puts Cov on C's scale)

trades "picked together by one token" (fewer groups per token) against "hot together in one
sequence" (a group that heats up when the topic moves). How much to trade is measured, not guessed:
the fit traces are split in two by sequence, each half places and the other half (as it is, and with
its popularity tilted, shifts.tilted) measures, both ways. The penalty with the lowest fan-out whose
imbalance is no worse than EPLB's on those splits wins; where none is, the placement is EPLB's own.
So it never trades balance for fan-out on evidence it does not have; on the FLAME traces (16 fit
sequences) that means EPLB, on the built-in model's 64 sequences a penalised affinity partition.
Replicas follow replicas.py in every case, so every slot is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from switchyard.router.affinity.affinity_placement import AffinityOptions, affinity_placement
from switchyard.router.affinity.aligned import AlignedRouting
from switchyard.router.affinity.alignment import align_group_labels
from switchyard.router.affinity.matrix import AffinityMatrix, fit_affinity
from switchyard.router.affinity.metrics import evaluate_placement
from switchyard.router.affinity.placement import Placement
from switchyard.router.affinity.shifts import sequence_counts, tilted
from switchyard.router.affinity.strategies import eplb
from switchyard.router.affinity.traces import RoutingTrace

EPLB = -1.0  # the "penalty" of a layer that takes EPLB's placement


@dataclass(frozen=True)
class RobustOptions:
    penalties: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)  # shift penalties tried per layer
    tilt_strength: float = 0.5  # popularity drift of the tilted validation splits (shifts.tilted)
    tilt_seeds: tuple[int, ...] = (1, 2)
    affinity: AffinityOptions = AffinityOptions()

    def __post_init__(self) -> None:
        if not self.penalties or min(self.penalties) < 0:
            raise ValueError(f"RobustOptions.penalties must be non-empty and >= 0, got {self.penalties}")


def sequence_covariance(trace: RoutingTrace) -> np.ndarray:
    """[L, E, E] covariance over sequences of each sequence's per-expert popularity, per layer."""
    sequences, counts, tokens = sequence_counts(trace.aligned())
    num_layers, num_experts = counts.shape[1:]
    if len(sequences) < 2:
        return np.zeros((num_layers, num_experts, num_experts))
    share = counts / tokens[:, None, None]  # [S, L, E]
    return np.stack([np.cov(share[:, l], rowvar=False) for l in range(num_layers)])


def penalised_pairs(matrix: AffinityMatrix, covariance: np.ndarray, penalty: float) -> np.ndarray:
    """[L, E, E] C - penalty * scale * Cov, scale = mean |C| / mean |Cov| off the diagonal, per layer."""
    off = ~np.eye(matrix.num_experts, dtype=bool)
    c_size = np.abs(matrix.coactivation[:, off]).mean(1)  # [L]
    cov_size = np.maximum(np.abs(covariance[:, off]).mean(1), 1e-18)
    return matrix.coactivation - (penalty * c_size / cov_size)[:, None, None] * covariance


def _placement_holds(matrix: AffinityMatrix, covariance: np.ndarray, penalty: float, num_groups: int,
                     replica_slots: int, options: RobustOptions) -> np.ndarray:
    """Unaligned holds [L, G, E] of the affinity placement under `penalty`, or EPLB's for EPLB."""
    if penalty == EPLB:
        return eplb(matrix.popularity, [int(x) for x in matrix.layers], num_groups, replica_slots).holds
    unaligned = AffinityOptions(options.affinity.balance_tolerance, align_layers=False)
    pairs = penalised_pairs(matrix, covariance, penalty)
    return affinity_placement(matrix, num_groups, replica_slots, unaligned, pairs).holds


def _candidates(trace: RoutingTrace, num_groups: int, replica_slots: int, options: RobustOptions) -> list[Placement]:
    """One unaligned placement per penalty, then EPLB's."""
    matrix, covariance = fit_affinity(trace), sequence_covariance(trace)
    layers = tuple(int(x) for x in matrix.layers)
    return [Placement("candidate", layers, _placement_holds(matrix, covariance, p, num_groups, replica_slots, options))
            for p in (*options.penalties, EPLB)]


def _validation_splits(trace: RoutingTrace, options: RobustOptions) -> list[tuple[RoutingTrace, list[AlignedRouting]]]:
    sequences = np.unique(trace.seq_id)
    if len(sequences) < 4:
        raise ValueError(f"robust placement needs at least 4 sequences in the fit traces, got {len(sequences)}")
    half = np.isin(trace.seq_id, sequences[::2])
    splits = []
    for fit_rows in (half, ~half):
        held_out = trace.select(~fit_rows).aligned()
        measured = [held_out] + [tilted(held_out, options.tilt_strength, seed) for seed in options.tilt_seeds]
        splits.append((trace.select(fit_rows), measured))
    return splits


def choose_penalty(
    trace: RoutingTrace, num_groups: int, replica_slots: int, options: RobustOptions = RobustOptions()
) -> float:
    """The penalty with the lowest mean fan-out whose mean imbalance on the validation splits is no worse
    than EPLB's, or EPLB (-1) if none is. One choice for all layers: per layer, the splits are too noisy."""
    fan_out, imbalance = 0.0, 0.0
    for fit, measured in _validation_splits(trace, options):
        reports = [[evaluate_placement(p, routing, hidden_size=1) for routing in measured]
                   for p in _candidates(fit, num_groups, replica_slots, options)]
        fan_out = fan_out + np.array([[r.mean_fan_out for r in row] for row in reports]).mean(1)  # [candidates]
        imbalance = imbalance + np.array([[r.mean_imbalance for r in row] for row in reports]).mean(1)
    allowed = imbalance <= imbalance[-1] * (1.0 + 1e-9)  # EPLB's own entry is always allowed
    return float(np.array([*options.penalties, EPLB])[np.where(allowed, fan_out, np.inf).argmin()])


def robust_affinity_placement(
    trace: RoutingTrace, num_groups: int, replica_slots: int = 0, options: RobustOptions = RobustOptions()
) -> Placement:
    """The placement of `trace` under the shift penalty choose_penalty picks (EPLB's where it picks EPLB),
    fitted on the whole trace; strategy "affinity-robust"."""
    penalty = choose_penalty(trace, num_groups, replica_slots, options)
    matrix = fit_affinity(trace)
    holds = _placement_holds(matrix, sequence_covariance(trace), penalty, num_groups, replica_slots, options)
    if options.affinity.align_layers:
        holds = align_group_labels(holds, matrix.popularity, matrix.transition, matrix.top_k)
    return Placement("affinity-robust", tuple(int(x) for x in matrix.layers), holds)
