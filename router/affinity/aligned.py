"""Routing arranged per layer for tokens seen at every layer: the form all affinity statistics use.

A token is a (seq_id, pos) pair. Cross-layer statistics (transition, prediction, group switches) need
the same token at layer l and l+1, so tokens missing from any layer are dropped here, once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AlignedRouting:
    layers: np.ndarray  # [L] int64, MoE layer ids in increasing order
    seq_id: np.ndarray  # [T] int64
    pos: np.ndarray  # [T] int64
    expert_ids: np.ndarray  # [L, T, k] int64: token t's experts at layers[l], best first
    gate_weights: np.ndarray  # [L, T, k] float32
    num_experts: int

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_tokens(self) -> int:
        return self.expert_ids.shape[1]

    @property
    def top_k(self) -> int:
        return self.expert_ids.shape[2]

    def multi_hot(self) -> np.ndarray:
        """[L, T, E] float32: 1 where the token picked the expert at that layer."""
        return multi_hot(self.expert_ids, self.num_experts)


def multi_hot(expert_ids: np.ndarray, num_experts: int) -> np.ndarray:
    """expert_ids [..., k] -> [..., E] float32 with ones at the chosen experts."""
    hot = np.zeros((*expert_ids.shape[:-1], num_experts), dtype=np.float32)
    np.put_along_axis(hot, expert_ids.astype(np.int64), 1.0, axis=-1)
    return hot


def align_layers(
    seq_id: np.ndarray,  # [N]
    pos: np.ndarray,  # [N]
    layer: np.ndarray,  # [N]
    expert_ids: np.ndarray,  # [N, k]
    gate_weights: np.ndarray,  # [N, k]
    num_experts: int,
) -> AlignedRouting:
    """Rows regrouped as [L, T, k], tokens ordered by (seq_id, pos), kept only if present at all layers."""
    key = (seq_id.astype(np.int64) << 32) | pos.astype(np.int64)  # one int per token
    layers = np.unique(layer).astype(np.int64)
    common: np.ndarray | None = None
    for value in layers:
        keys = key[layer == value]
        if len(np.unique(keys)) != len(keys):
            raise ValueError(f"layer {value}: a (seq_id, pos) token appears more than once")
        common = keys if common is None else np.intersect1d(common, keys)
    common = np.sort(common) if common is not None else np.zeros(0, np.int64)
    rows = []
    for value in layers:
        in_layer = np.flatnonzero(layer == value)
        order = in_layer[np.argsort(key[in_layer])]
        rows.append(order[np.isin(key[order], common, assume_unique=True)])
    picked = np.stack(rows) if rows else np.zeros((0, 0), np.int64)  # [L, T] row numbers
    k = expert_ids.shape[1]
    return AlignedRouting(
        layers=layers,
        seq_id=common >> 32,
        pos=common & 0xFFFFFFFF,
        expert_ids=expert_ids[picked].astype(np.int64).reshape(len(layers), len(common), k),
        gate_weights=gate_weights[picked].astype(np.float32).reshape(len(layers), len(common), k),
        num_experts=num_experts,
    )
