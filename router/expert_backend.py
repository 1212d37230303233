"""The [Experts] stage behind one interface, and the synchronous forward pass that uses it.

`LocalExperts` computes in this process (the single-process engine). The cluster provides a backend whose
`run` sends each expert group its tokens; the dense model does not know the difference.
"""

from __future__ import annotations

from typing import Protocol

import torch

from switchyard.experts.group import ExpertGroup
from switchyard.experts.messages import ExpertRequest
from switchyard.router.batch import StepBatch
from switchyard.router.dense_model import DenseModel, Routing
from switchyard.router.kv_cache import KVCache


class ExpertBackend(Protocol):
    def run(self, layer: int, hidden: torch.Tensor, routing: Routing) -> torch.Tensor:
        """hidden [T, H] and the gate's top-k choice → weighted sum of the chosen experts' outputs [T, H]."""
        ...


class LocalExperts:
    def __init__(self, group: ExpertGroup):
        self.group = group

    def run(self, layer: int, hidden: torch.Tensor, routing: Routing) -> torch.Tensor:
        return self.group.forward(ExpertRequest(layer, hidden, routing.expert_ids, routing.weights)).hidden


class RoutingObserver(Protocol):
    def observe(self, layer: int, batch: StepBatch, routing: Routing) -> None: ...


def forward_step(model: DenseModel, experts: ExpertBackend, cache: KVCache, batch: StepBatch,
                 observer: RoutingObserver | None = None, all_logits: bool = False) -> torch.Tensor:
    """Run every layer for the step's new tokens. Returns logits [B, V] of each sequence's last token
    (or [T, V] for every new token with `all_logits`)."""
    x = model.embed(batch.token_ids)  # [T, H]
    for index in range(len(model.layers)):
        x = model.attention_block(index, x, batch, cache)
        h, routing = model.moe_input(index, x)
        expert_out = None
        if routing is not None:
            if observer is not None:
                observer.observe(index, batch, routing)
            expert_out = experts.run(index, h, routing)
        x = model.moe_output(index, x, h, expert_out)
    return model.logits(x if all_logits else x[batch.last_token_index])
