"""Each request's routing so far, and a live affinity matrix, for forecasting the expert groups' load.

An engine observer (like trace_recorder.RoutingWindow): the hot path only copies the step's expert ids to the
host and appends them to a bounded buffer. `drain`, called by whoever forecasts (once a second), folds them
into per-sequence pick counts [L, E] and into popularity and transition counts that decay with a half-life
counted in tokens, so the matrix follows the traffic. Experts dropped by adaptive routing (-1) count as the
token's first expert, which it always keeps.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
import torch

from switchyard.router.batch import StepBatch
from switchyard.router.gates import Routing


class RequestRouting:
    def __init__(self, layers: tuple[int, ...], num_experts: int, top_k: int, half_life_tokens: float = 4096.0,
                 max_chunks: int = 1 << 14):
        self.layers, self.num_experts, self.top_k = tuple(layers), num_experts, top_k
        self._layer_index = {layer: i for i, layer in enumerate(self.layers)}
        self.half_life_tokens = half_life_tokens
        self._chunks: deque = deque(maxlen=max_chunks)  # (layer, token seq numbers [T], expert ids [T, k])
        self._lock = threading.Lock()
        num_layers = len(self.layers)
        self.per_seq: dict[int, np.ndarray] = {}  # sequence number -> [L, E] picks counted
        self.tokens: dict[int, int] = {}  # sequence number -> tokens counted (at the first MoE layer)
        self.pick_counts = np.zeros((num_layers, num_experts))  # [L, E] decayed
        self.token_counts = np.zeros(num_layers)  # [L] decayed
        self.pair_counts = np.zeros((max(num_layers - 1, 0), num_experts, num_experts))  # [L-1, E, E] decayed

    # -- hot path -----------------------------------------------------------------------------------------
    def observe(self, layer: int, batch: StepBatch, routing: Routing) -> None:
        ids = routing.expert_ids.to("cpu", copy=True)
        with self._lock:
            self._chunks.append((layer, batch.token_seq_numbers, ids))

    # -- off the hot path ---------------------------------------------------------------------------------
    def drain(self) -> int:
        """Fold the buffered routing into the counts; returns the tokens seen at the first MoE layer."""
        with self._lock:
            chunks, self._chunks = list(self._chunks), deque(maxlen=self._chunks.maxlen)
        new_tokens = sum(len(seqs) for layer, seqs, _ in chunks if self._layer_index.get(layer) == 0)
        decay = 0.5 ** (new_tokens / self.half_life_tokens)
        self.pick_counts *= decay
        self.token_counts *= decay
        self.pair_counts *= decay
        # per micro-batch (its token tensor), its last chunk: one MoE layer earlier, the same tokens in order
        previous: dict[int, tuple] = {}
        for layer, seqs, ids in chunks:
            l = self._layer_index.get(layer)
            if l is None:
                continue
            ids = torch.where(ids >= 0, ids, ids[:, :1]).numpy()  # [T, k]
            self._count_sequences(l, seqs.numpy(), ids)
            np.add.at(self.pick_counts[l], ids.reshape(-1), 1.0)
            self.token_counts[l] += len(ids)
            last = previous.get(id(seqs))  # `chunks` holds every tensor alive, so ids are not reused
            if last is not None and last[0] == l - 1:
                before = last[1]  # [T, k]
                flat = (before[:, :, None] * self.num_experts + ids[:, None, :]).reshape(-1)
                self.pair_counts[l - 1] += np.bincount(flat, minlength=self.num_experts ** 2).reshape(
                    self.num_experts, self.num_experts)
            previous[id(seqs)] = (l, ids)
        return new_tokens

    def _count_sequences(self, l: int, seqs: np.ndarray, ids: np.ndarray) -> None:
        numbers, owner = np.unique(seqs, return_inverse=True)
        counts = np.zeros((len(numbers), self.num_experts))
        np.add.at(counts, (np.repeat(owner, ids.shape[1]), ids.reshape(-1)), 1.0)
        tokens = np.bincount(owner, minlength=len(numbers))
        for i, number in enumerate(numbers.tolist()):
            if number not in self.per_seq:
                self.per_seq[number] = np.zeros((len(self.layers), self.num_experts))
                self.tokens[number] = 0
            self.per_seq[number][l] += counts[i]
            if l == 0:
                self.tokens[number] += int(tokens[i])

    def forget_except(self, live: set[int]) -> None:
        """Drop the counts of sequences no longer held (finished or aborted)."""
        for number in [n for n in self.per_seq if n not in live]:
            del self.per_seq[number], self.tokens[number]

    def request_counts(self, numbers: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """([R, L, E] picks counted, [R] tokens counted) of these sequences (zeros for one not seen yet)."""
        empty = np.zeros((len(self.layers), self.num_experts))
        counts = np.stack([self.per_seq.get(n, empty) for n in numbers]) if numbers else \
            np.zeros((0, len(self.layers), self.num_experts))
        return counts, np.array([self.tokens.get(n, 0) for n in numbers], np.float64)

    def popularity(self) -> np.ndarray:
        """[L, E] picks per token (rows sum to top_k); uniform at a layer with nothing seen."""
        uniform = np.full(self.num_experts, self.top_k / self.num_experts)
        seen = self.token_counts[:, None] > 0
        return np.where(seen, self.pick_counts / np.maximum(self.token_counts[:, None], 1e-12), uniform)

    def transition(self) -> np.ndarray:
        """[L-1, E, E] P(expert j at the next layer | i here), rows sum to 1; an unseen row falls back to the
        next layer's popularity / top_k (as `affinity.matrix.fit_affinity`)."""
        popularity = self.popularity()
        rows = self.pair_counts.sum(axis=2, keepdims=True)  # [L-1, E, 1]
        fallback = np.broadcast_to(popularity[1:, None, :] / self.top_k, self.pair_counts.shape)
        return np.where(rows > 0, self.pair_counts / np.maximum(rows, 1e-12), fallback)
