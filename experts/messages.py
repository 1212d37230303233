"""What the router sends an expert group for one layer, and what comes back. Tensors only, no tuples.

They cross processes on every layer, so they pickle their tensors as numpy arrays: Ray moves numpy buffers out
of band (pickle protocol 5) instead of copying them into the pickle stream as it does torch tensors.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

# Unpickled arrays are read-only views of Ray's object store or channel buffers. Nothing writes into a message
# in place (the group reads its request, the router reads and sums the responses), so the views are safe and
# torch's warning about them is noise. Copying them instead would cost a pass over every message.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)


@dataclass
class ExpertRequest:
    """One layer's work for one group: the hidden states of the tokens routed to it."""

    layer: int
    hidden: torch.Tensor  # [T, H] post-attention-norm hidden states
    expert_ids: torch.Tensor  # [T, k] int64 global expert ids; -1 where this group is not asked
    weights: torch.Tensor  # [T, k] float32 gate weights, matching expert_ids
    trace: dict[str, str] | None = None  # W3C trace context of a sampled dispatch span (cluster/observability/tracing.py)

    def __reduce__(self):
        return _rebuild_request, (self.layer, *(_pack(t) for t in (self.hidden, self.expert_ids, self.weights)),
                                  self.trace)


@dataclass
class ExpertResponse:
    layer: int
    hidden: torch.Tensor  # [T, H] sum over the group's (token, expert) pairs of weight * expert(hidden)

    def __reduce__(self):
        return _rebuild_response, (self.layer, _pack(self.hidden))


def _pack(t: torch.Tensor):
    """numpy for the out-of-band path; bfloat16 (no numpy dtype) stays a tensor."""
    return t.contiguous().numpy() if t.dtype != torch.bfloat16 else t


def _unpack(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(x)


def _rebuild_request(layer, hidden, expert_ids, weights, trace=None) -> "ExpertRequest":
    return ExpertRequest(layer, _unpack(hidden), _unpack(expert_ids), _unpack(weights), trace)


def _rebuild_response(layer, hidden) -> "ExpertResponse":
    return ExpertResponse(layer, _unpack(hidden))
