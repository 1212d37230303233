"""The [Dispatch] and [Combine] stages on the router: each layer sends every expert group one batched call
with the hidden states of the tokens routed to it, and sums what comes back."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from switchyard.cluster.observability import tracing
from switchyard.cluster.dispatch.transport import ExpertTransport
from switchyard.experts.messages import ExpertRequest
from switchyard.router.dense_model import Routing


@dataclass
class DispatchStats:
    """Running totals, for metrics and benchmarks."""

    token_layers: int = 0  # (token, layer) pairs dispatched
    group_messages: int = 0  # (token, group) pairs sent; / token_layers = fan-out
    calls: int = 0
    tokens_per_group: list[int] = field(default_factory=list)

    @property
    def fan_out(self) -> float:
        return self.group_messages / max(1, self.token_layers)

    def dispatch_counters(self) -> tuple[int, int]:
        """(group messages, token layers) so far: what re-placement compares since a switch."""
        return self.group_messages, self.token_layers


class RemoteExperts:
    def __init__(self, choose_groups, transport: ExpertTransport, num_groups: int, on_dispatch=None,
                 on_layer_done=None):
        """choose_groups(layer, expert_ids [T, k]) → [T, k] the group serving each chosen expert.
        on_dispatch(num_tokens, {group: tokens}) sees every layer's dispatch, on_layer_done(layer, seconds)
        the time from its submit to the end of its wait (metrics)."""
        self.choose_groups = choose_groups
        self.transport = transport
        self.on_dispatch = on_dispatch
        self.on_layer_done = on_layer_done
        self.stats = DispatchStats(tokens_per_group=[0] * num_groups)

    def use_placement(self, choose_groups) -> None:
        """Route by a new placement from the next layer on; called on the engine thread, between two steps."""
        self.choose_groups = choose_groups

    def submit(self, layer: int, hidden: torch.Tensor, routing: Routing):
        device = hidden.device
        if device.type != "cpu":  # messages travel from the host: the layer's rows leave the GPU once, together
            hidden, routing = hidden.cpu(), Routing(routing.expert_ids.cpu(), routing.weights.cpu())
        kept = routing.expert_ids >= 0  # adaptive routing marks dropped experts -1: they go nowhere
        groups = self.choose_groups(layer, routing.expert_ids.clamp(min=0))  # [T, k] group of each chosen expert
        groups = torch.where(kept, groups, -1)
        requests, rows_of = {}, {}
        for group in [g for g in torch.unique(groups).tolist() if g >= 0]:
            chosen = groups == group  # [T, k]
            rows = chosen.any(dim=1).nonzero().squeeze(1)  # tokens with at least one expert in this group
            requests[group] = ExpertRequest(layer, hidden[rows], torch.where(chosen, routing.expert_ids, -1)[rows],
                                            routing.weights[rows])
            rows_of[group] = rows
            self.stats.group_messages += rows.numel()
            self.stats.tokens_per_group[group] += rows.numel()
        start = time.perf_counter()
        tokens_per_group = {g: rows.numel() for g, rows in rows_of.items()}
        span = tracing.start_dispatch(layer, hidden.shape[0], tokens_per_group)  # None unless sampled
        if span is not None:
            context = tracing.carrier(span)
            for request in requests.values():
                request.trace = context
        pending = self.transport.send(requests)
        if span is not None:
            span.set_attribute("switchyard.dispatch.replicas",
                               [f"{g}:{r}" for g, rs in self.transport.called(pending).items() for r in rs])
        self.stats.token_layers += hidden.shape[0]
        self.stats.calls += len(requests)
        if self.on_dispatch is not None:
            self.on_dispatch(hidden.shape[0], tokens_per_group)
        return _Dispatched(layer, hidden.shape, hidden.dtype, rows_of, pending, start, span, device)

    def wait(self, dispatched: "_Dispatched") -> torch.Tensor:
        out = torch.zeros(dispatched.shape, dtype=dispatched.dtype)  # [T, H]
        try:
            responses = self.transport.receive(dispatched.pending)
        except BaseException as err:
            tracing.end_dispatch(dispatched.span, err)
            raise
        for group, response in responses.items():
            out.index_add_(0, dispatched.rows_of[group], response.hidden.to(dispatched.dtype))
        tracing.end_dispatch(dispatched.span)
        if self.on_layer_done is not None:
            self.on_layer_done(dispatched.layer, time.perf_counter() - dispatched.start)
        return out.to(dispatched.device, non_blocking=True)


@dataclass
class _Dispatched:
    """One layer in flight: where each group's answer goes back, and what measures it."""

    layer: int
    shape: torch.Size  # [T, H]
    dtype: torch.dtype
    rows_of: dict[int, torch.Tensor]  # group -> [T_g] token rows it was sent
    pending: object  # the transport's
    start: float
    span: object | None = None
    device: torch.device = torch.device("cpu")  # the router's, where the combined result goes
