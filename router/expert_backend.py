"""The [Experts] stage behind one interface, and the synchronous forward pass that uses it.

`LocalExperts` computes in this process (the single-process engine). The cluster provides a backend whose
`run` sends each expert group its tokens; the dense model does not know the difference.
"""

from __future__ import annotations

from typing import Protocol

import torch

from switchyard.configs.engine import AdaptiveRouting
from switchyard.experts.group import ExpertGroup
from switchyard.experts.messages import ExpertRequest
from switchyard.router.adaptive_routing import adapt_routing
from switchyard.router.batch import StepBatch
from switchyard.router.dense_model import DenseModel, Routing
from switchyard.router.kv_cache import BlockPool


class ExpertBackend(Protocol):
    """`submit` starts the experts of one layer for some tokens; `wait` returns their weighted sum [T, H].

    A remote backend returns from `submit` at once, so the caller can run other work (another micro-batch's
    attention) while the expert groups compute.
    """

    def submit(self, layer: int, hidden: torch.Tensor, routing: Routing) -> object: ...

    def wait(self, pending: object) -> torch.Tensor: ...


class LocalExperts:
    def __init__(self, group: ExpertGroup):
        self.group = group

    def submit(self, layer: int, hidden: torch.Tensor, routing: Routing) -> torch.Tensor:
        return self.group.forward(ExpertRequest(layer, hidden, routing.expert_ids, routing.weights)).hidden

    def wait(self, pending: torch.Tensor) -> torch.Tensor:
        return pending


class RoutingObserver(Protocol):
    def observe(self, layer: int, batch: StepBatch, routing: Routing) -> None: ...


class Observers:
    """Several observers where the engine has room for one (e.g. the routing window and the load forecast)."""

    def __init__(self, *observers: RoutingObserver):
        self.observers = list(observers)

    @staticmethod
    def of(*observers: RoutingObserver | None) -> RoutingObserver | None:
        """The observer for the engine: None, the one given, or a tee of several (Nones left out)."""
        given = [o for o in observers if o is not None]
        return None if not given else given[0] if len(given) == 1 else Observers(*given)

    def observe(self, layer: int, batch: StepBatch, routing: Routing) -> None:
        for observer in self.observers:
            observer.observe(layer, batch, routing)


def forward_step(model: DenseModel, experts: ExpertBackend, cache: BlockPool, batch: StepBatch,
                 observer: RoutingObserver | None = None, all_logits: bool = False,
                 micro_batches: int = 1, adaptive: AdaptiveRouting | None = None) -> torch.Tensor:
    """Run every layer for the step's new tokens. Returns logits [B, V] of each sequence's last token
    (or [T, V] for every new token with `all_logits`). `adaptive` trims each token's experts after the gate;
    the observer sees the routing as dispatched.

    With micro-batches (ping-pong), layer l of micro-batch i runs its attention while micro-batch i-1's
    experts of layer l are still computing:
        attn(l, mb0) → submit → attn(l, mb1) → submit → wait(mb0) → combine → attn(l+1, mb0) → …
    """
    parts = batch.split(micro_batches) if micro_batches > 1 and batch.num_seqs > 1 else [batch]
    xs = [model.embed(part.token_ids) for part in parts]  # each [T_i, H]
    # per micro-batch, the layer whose experts are in flight: (x, h, pending)
    in_flight: list[tuple[torch.Tensor, torch.Tensor, object] | None] = [None] * len(parts)
    for index in range(len(model.layers)):
        for i, part in enumerate(parts):
            if in_flight[i] is not None:
                x_prev, h_prev, pending = in_flight[i]
                xs[i] = model.moe_output(index - 1, x_prev, h_prev, experts.wait(pending))
                in_flight[i] = None
            x = model.attention_block(index, xs[i], part, cache)
            h, routing = model.moe_input(index, x)
            if routing is None:
                xs[i] = model.moe_output(index, x, h, None)
                continue
            if adaptive is not None:
                routing = adapt_routing(routing, adaptive)
            if observer is not None:
                observer.observe(index, part, routing)
            in_flight[i] = (x, h, experts.submit(index, h, routing))
    last = len(model.layers) - 1
    for i in range(len(parts)):
        if in_flight[i] is not None:
            x_prev, h_prev, pending = in_flight[i]
            xs[i] = model.moe_output(last, x_prev, h_prev, experts.wait(pending))
    x = torch.cat(xs) if len(xs) > 1 else xs[0]
    if all_logits:
        return model.logits(x)
    starts = torch.tensor([0] + [p.token_ids.numel() for p in parts[:-1]]).cumsum(0)
    last_index = torch.cat([p.last_token_index + s for p, s in zip(parts, starts.tolist())])  # on the batch's device
    return model.logits(x[last_index])
