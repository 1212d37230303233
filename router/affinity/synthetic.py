"""Synthetic routing traces with affinity structure, for tests and scale benchmarks.

Each layer's experts are split into topics; each token has a topic per layer that tends to follow a
fixed topic-to-topic map from layer to layer (so transitions carry information), and picks its top-k
experts with a bonus for experts of its topic (so co-activation carries information). Sequences
prefer a few topics, like real text does.
"""

from __future__ import annotations

import numpy as np

from switchyard.router.affinity.traces import RoutingTrace, TraceMetadata


def synthetic_trace(
    num_layers: int = 4,
    num_experts: int = 16,
    top_k: int = 2,
    num_sequences: int = 8,
    seq_len: int = 32,
    num_topics: int = 4,
    topic_bonus: float = 3.0,
    topic_stay: float = 0.8,
    seed: int = 0,
) -> RoutingTrace:
    """A trace of num_sequences x seq_len tokens at layers 0..num_layers-1."""
    rng = np.random.default_rng(seed)
    num_tokens = num_sequences * seq_len
    expert_topic = np.stack([rng.permutation(num_experts) % num_topics for _ in range(num_layers)])  # [L, E]
    base_logit = rng.normal(0.0, 0.5, size=(num_layers, num_experts))  # [L, E] some experts are hot
    topic_map = np.stack([rng.permutation(num_topics) for _ in range(num_layers)])  # [L, topics]
    seq_mix = rng.dirichlet(np.full(num_topics, 0.5), size=num_sequences)  # [S, topics]
    seq_id = np.repeat(np.arange(num_sequences), seq_len)  # [T]
    topic_cdf = np.cumsum(seq_mix, axis=1)[seq_id]  # [T, topics]

    def draw_topics() -> np.ndarray:  # [T], each token from its sequence's topic mix
        return np.minimum((rng.random(num_tokens)[:, None] > topic_cdf).sum(1), num_topics - 1)

    topic = draw_topics()  # [T] topic at layer 0

    ids, weights = [], []
    for l in range(num_layers):
        if l:
            topic = np.where(rng.random(num_tokens) < topic_stay, topic_map[l][topic], draw_topics())
        logits = base_logit[l][None, :] + topic_bonus * (expert_topic[l][None, :] == topic[:, None])  # [T, E]
        noisy = logits + rng.gumbel(size=logits.shape)  # Gumbel top-k = sampling without replacement
        top = np.argsort(-noisy, axis=1)[:, :top_k]  # [T, k]
        chosen = np.take_along_axis(logits, top, axis=1)
        gate = np.exp(chosen - chosen.max(1, keepdims=True))
        ids.append(top)
        weights.append(gate / gate.sum(1, keepdims=True))

    metadata = TraceMetadata(
        model="synthetic", num_experts=num_experts, top_k=top_k, layers=tuple(range(num_layers)), source="synthetic"
    )
    return RoutingTrace(
        seq_id=np.tile(seq_id, num_layers).astype(np.int32),
        pos=np.tile(np.tile(np.arange(seq_len), num_sequences), num_layers).astype(np.int32),
        token_id=np.full(num_tokens * num_layers, -1, np.int32),
        layer=np.repeat(np.arange(num_layers), num_tokens).astype(np.int16),
        expert_ids=np.concatenate(ids).astype(np.int16),
        gate_weights=np.concatenate(weights).astype(np.float32),
        metadata=metadata,
    )
