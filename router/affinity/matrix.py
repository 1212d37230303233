"""The expert affinity matrix: popularity, co-activation and layer-to-layer transition, fitted from traces.

For MoE layer l (index into `layers`) and experts i, j:

    popularity    p[l, i]    = share of layer-l tokens routed to i             (sums to top_k over i)
    coactivation  C[l, i, j] = share of layer-l tokens routed to both i and j  (symmetric, diag = p)
    transition    T[l, i, j] = P(a layer-(l+1) pick of the token is j | i was picked at layer l)

T is over the token's k picks at the next layer, so each row is a distribution (sums to 1); the
probability that j is among the next layer's experts is k * T[l, i, j]. T relates consecutive entries
of `layers`, so there are L-1 of them. A row whose expert was never picked has no data: it falls back
to the next layer's popularity / k, which is the best guess and keeps the row a distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike

import numpy as np

from switchyard.router.affinity.traces import RoutingTrace

_FORMAT_VERSION = 1
_CHUNK_TOKENS = 65536  # bounds the [chunk * k * k] pair index arrays to a few tens of MB


@dataclass(frozen=True)
class AffinityMatrix:
    layers: np.ndarray  # [L] int64, MoE layer ids
    num_experts: int
    top_k: int
    num_tokens: np.ndarray  # [L] int64, tokens behind each layer's p and C
    popularity: np.ndarray  # [L, E] float64
    coactivation: np.ndarray  # [L, E, E] float64
    transition: np.ndarray  # [L-1, E, E] float64, rows sum to 1

    def __post_init__(self) -> None:
        num_layers, e = len(self.layers), self.num_experts
        expected = {
            "num_tokens": (num_layers,),
            "popularity": (num_layers, e),
            "coactivation": (num_layers, e, e),
            "transition": (max(num_layers - 1, 0), e, e),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"AffinityMatrix.{name}: shape {getattr(self, name).shape}, expected {shape}")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def layer_index(self, layer: int) -> int:
        """Position of MoE layer id `layer` in `layers`."""
        hits = np.flatnonzero(self.layers == layer)
        if len(hits) == 0:
            raise KeyError(f"layer {layer} is not in the matrix (layers {self.layers.tolist()})")
        return int(hits[0])

    def save(self, path: str | PathLike[str]) -> None:
        """npz with every field; `load` reads it back."""
        np.savez_compressed(
            path,
            format_version=np.int64(_FORMAT_VERSION),
            layers=self.layers,
            num_experts=np.int64(self.num_experts),
            top_k=np.int64(self.top_k),
            num_tokens=self.num_tokens,
            popularity=self.popularity,
            coactivation=self.coactivation,
            transition=self.transition,
        )

    @staticmethod
    def load(path: str | PathLike[str]) -> "AffinityMatrix":
        with np.load(path) as data:
            version = int(data["format_version"])
            if version != _FORMAT_VERSION:
                raise ValueError(f"{path}: format_version {version}, this code reads {_FORMAT_VERSION}")
            return AffinityMatrix(
                layers=data["layers"],
                num_experts=int(data["num_experts"]),
                top_k=int(data["top_k"]),
                num_tokens=data["num_tokens"],
                popularity=data["popularity"],
                coactivation=data["coactivation"],
                transition=data["transition"],
            )


def pair_counts(first: np.ndarray, second: np.ndarray, num_experts: int) -> np.ndarray:
    """Count (i in first[t], j in second[t]) over tokens t.

    first [T, k], second [T, k'] expert ids -> [E, E] float64 counts. Chunked so memory stays flat.
    """
    counts = np.zeros(num_experts * num_experts, dtype=np.float64)
    for start in range(0, len(first), _CHUNK_TOKENS):
        a = first[start : start + _CHUNK_TOKENS].astype(np.int64)
        b = second[start : start + _CHUNK_TOKENS].astype(np.int64)
        flat = (a[:, :, None] * num_experts + b[:, None, :]).reshape(-1)  # [t * k * k']
        counts += np.bincount(flat, minlength=num_experts * num_experts)
    return counts.reshape(num_experts, num_experts)


def fit_affinity(trace: RoutingTrace) -> AffinityMatrix:
    """p and C from every row of each layer; T from tokens present at both layers of a pair."""
    e, k = trace.metadata.num_experts, trace.metadata.top_k
    layers = np.unique(trace.layer).astype(np.int64)
    num_tokens = np.zeros(len(layers), np.int64)
    coactivation = np.zeros((len(layers), e, e))
    for l, layer in enumerate(layers):
        ids = trace.expert_ids[trace.layer == layer]  # [T_l, k]
        num_tokens[l] = len(ids)
        coactivation[l] = pair_counts(ids, ids, e) / max(len(ids), 1)
    popularity = np.einsum("lii->li", coactivation).copy()  # a token picks an expert at most once

    aligned = trace.aligned()
    transition = np.zeros((max(len(layers) - 1, 0), e, e))
    for l in range(len(layers) - 1):
        counts = pair_counts(aligned.expert_ids[l], aligned.expert_ids[l + 1], e)  # [E, E]
        row_total = counts.sum(axis=1, keepdims=True)  # = k * (tokens that picked i)
        fallback = np.broadcast_to(popularity[l + 1] / k, (e, e))
        transition[l] = np.where(row_total > 0, counts / np.maximum(row_total, 1), fallback)
    return AffinityMatrix(layers, e, k, num_tokens, popularity, coactivation, transition)
