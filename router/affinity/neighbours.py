"""Predict a token's later experts from the fit tokens whose routing path so far looks most like its own.

Why: the ridge fit (prediction.fit_predictor) is linear in the last `history` layers, so it cannot say
"tokens that went A at layer 2 *and* B at layer 5 go C at layer 6"; a nearest-neighbour memory of the
whole path can, and it has nothing to fit but the fit tokens' routing. The two err differently, so
their normalised sum (`ensemble_scores`) beats either alone on the real traces.

similarity(t, s) at layer l = sum over b = 0..l of decay**b * |picks of t ∩ picks of s at layer l - b|
(the path so far, recent layers weighted more). The `neighbours` most similar fit tokens vote for
their picks at l + d, each with weight similarity**power. Ties at the last neighbour place share the
remaining votes equally, so the scores do not depend on the order of the fit tokens.

Only the routing of layers up to l is used: no token ids and no neighbouring tokens of the sequence
(both were tried on flame-moe-290m and overfit the 1024 fit tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from switchyard.router.affinity.aligned import AlignedRouting, multi_hot

# Defaults chosen by 4-fold cross-validation by sequence *inside* the fit split of flame-moe-290m
# (fit on 12 of seq_id 0-15, validate on the other 4; the held-out seq_id >= 16 was never looked at):
# scripts/neighbour_selection.py reproduces the grid and the choice, the best ensemble by next-layer
# recall@6 (CV 0.575, against 0.523 for the ridge fit alone). The top of the grid is flat (within 0.001
# across neighbours 15-50, decay 0.75-1, ridge weight 1-1.5 at power 6), so the exact values matter little.
NEIGHBOURS = 20
DECAY = 0.75
POWER = 6.0
ENSEMBLE_WEIGHT = 1.5  # weight of the ridge scores against the neighbour scores, both rows summing to 1

# Bound on one [evaluated tokens, fit tokens] float32 block; scoring holds about six such blocks at once
# (similarity, overlap, masks, weights), so about 100 MB at this bound, whatever the number of tokens.
SIMILARITY_BYTES = 16 << 20


@dataclass(frozen=True)
class NeighbourPredictor:
    layers: np.ndarray  # [L] layer ids
    num_experts: int
    top_k: int
    picks: np.ndarray  # [L, T_fit, E] float32 multi-hot routing of the fit tokens (L*T_fit*E*4 bytes)
    popularity: np.ndarray  # [L, E] the fit tokens' share of picks per expert (rows sum to 1): the fallback
    neighbours: int = NEIGHBOURS
    decay: float = DECAY
    power: float = POWER

    @property
    def num_fit_tokens(self) -> int:
        return self.picks.shape[1]

    def _chunk_tokens(self, max_bytes: int) -> int:
        return max(1, max_bytes // (4 * max(1, self.num_fit_tokens)))

    def similarity(self, expert_ids: np.ndarray, layer: int) -> np.ndarray:
        """Routing [h, T, k] up to and including `layer` (most recent last) -> [T, T_fit] path similarity.

        Each layer's overlap is an exact small integer and the decayed sum runs in a fixed order, so a
        token's row is bitwise the same however the evaluated tokens are chunked. Not chunked here:
        `scores` calls it on chunks.
        """
        l = self._layer_index(layer)
        h = expert_ids.shape[0]
        similarity = np.zeros((expert_ids.shape[1], self.num_fit_tokens), np.float32)
        for back in range(min(h, l + 1)):
            overlap = multi_hot(expert_ids[h - 1 - back], self.num_experts) @ self.picks[l - back].T
            similarity += np.float32(self.decay**back) * overlap
        return similarity

    def scores(
        self, expert_ids: np.ndarray, layer: int, distance: int, max_bytes: int = SIMILARITY_BYTES
    ) -> np.ndarray:
        """Routing [h, T, k] up to and including `layer` -> [T, E] expected picks at layer + distance.

        A row is the neighbours' picks averaged with weights similarity**power (so it sums to top_k, like
        `transition_scores`, and can feed `forecast_group_load`). A token that shares no expert with any
        fit token gets the fit popularity. Evaluated tokens go in chunks so that no similarity block
        exceeds `max_bytes`.
        """
        l = self._layer_index(layer)
        if distance < 1 or l + distance >= len(self.layers):
            raise ValueError(f"no layer {distance} MoE layers after layer {layer}")
        n = min(self.neighbours, self.num_fit_tokens)
        target = self.picks[l + distance]  # [T_fit, E]
        num_tokens = expert_ids.shape[1]
        out = np.empty((num_tokens, self.num_experts), np.float32)
        step = self._chunk_tokens(max_bytes)
        for start in range(0, num_tokens, step):
            similarity = self.similarity(expert_ids[:, start : start + step], layer)  # [t, T_fit]
            threshold = np.partition(similarity, -n, axis=1)[:, [-n]]  # [t, 1] the n-th best
            above = similarity > threshold
            tied = similarity == threshold
            share = (n - above.sum(1, keepdims=True)) / tied.sum(1, keepdims=True)  # votes left per tie
            # Scaled by the row's best similarity first: the same ranking, and no overflow at high powers.
            best = similarity.max(axis=1, keepdims=True)
            closeness = similarity / np.where(best > 0, best, 1.0)
            weight = (above + tied * share.astype(np.float32)) * closeness**self.power  # [t, T_fit]
            total = weight.sum(axis=1, keepdims=True)
            mean = (weight @ target) / np.where(total > 0, total, 1.0)
            out[start : start + step] = np.where(total > 0, mean, self.top_k * self.popularity[l + distance])
        return out

    def _layer_index(self, layer: int) -> int:
        found = np.flatnonzero(self.layers == layer)
        if not len(found):
            raise ValueError(f"layer {layer} is not one of {self.layers.tolist()}")
        return int(found[0])


def fit_neighbours(
    routing: AlignedRouting, neighbours: int = NEIGHBOURS, decay: float = DECAY, power: float = POWER
) -> NeighbourPredictor:
    """Remember the fit tokens' routing; nothing else is fitted."""
    if not routing.num_tokens or neighbours < 1:
        raise ValueError(f"need fit tokens and neighbours >= 1, got {routing.num_tokens} tokens, {neighbours} neighbours")
    picks = routing.multi_hot()  # [L, T, E]
    popularity = picks.mean(axis=1) / routing.top_k
    return NeighbourPredictor(
        routing.layers.copy(), routing.num_experts, routing.top_k, picks, popularity, neighbours, decay, power
    )


def normalise_rows(scores: np.ndarray) -> np.ndarray:
    """[T, E] -> rows with absolute values summing to 1 (all-zero rows stay zero), so that two predictors
    with different scales can be added."""
    total = np.abs(scores).sum(axis=1, keepdims=True)
    return scores / np.where(total > 0, total, 1.0)


def ensemble_scores(neighbour: np.ndarray, ridge: np.ndarray, ridge_weight: float = ENSEMBLE_WEIGHT) -> np.ndarray:
    """Neighbour votes [T, E] + ridge_weight x ridge scores [T, E], each row-normalised first."""
    return normalise_rows(neighbour) + ridge_weight * normalise_rows(ridge)
