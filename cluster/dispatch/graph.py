"""One compiled graph over the expert-group replicas (compiled_graph.py builds, executes and rebuilds it): an input
and an output channel per (group, replica) slot, a group's tokens split evenly over its slots."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import torch
from ray.dag import InputNode, MultiOutputNode

from switchyard.cluster.deployments.expert_group import call_group
from switchyard.cluster.dispatch.transport import ExpertGroupUnavailable
from switchyard.experts.messages import ExpertRequest, ExpertResponse

log = logging.getLogger(__name__)


def _call_group_or_none(actor, request: ExpertRequest | None) -> ExpertResponse | None:
    return None if request is None else call_group(actor, request)


@dataclass(frozen=True)
class Slot:
    group: int
    replica_id: str
    actor: object


class Graph:
    """One compiled graph: an input and an output channel per (group, replica) slot."""

    def __init__(self, slots: list[Slot], max_in_flight: int, timeout_s: float):
        self.slots = slots
        with InputNode() as inputs:
            outputs = [slot.actor.__ray_call__.bind(_call_group_or_none, inputs[i]) for i, slot in enumerate(slots)]
            dag = MultiOutputNode(outputs)
        self.dag = dag.experimental_compile(_max_inflight_executions=max_in_flight, _submit_timeout=timeout_s)
        self.broken = False
        self.in_flight = 0  # executions not yet read back
        self._torn_down = threading.Lock()

    def split(self, requests: dict[int, ExpertRequest]) -> tuple[list[ExpertRequest | None], dict[int, list[int]]]:
        """One input per slot: a group's tokens split evenly over its replicas' slots."""
        inputs: list[ExpertRequest | None] = [None] * len(self.slots)
        slots_of: dict[int, list[int]] = {}
        for index, slot in enumerate(self.slots):
            slots_of.setdefault(slot.group, []).append(index)
        for group, request in requests.items():
            mine = slots_of.get(group, [])
            if not mine:
                raise ExpertGroupUnavailable(f"expert group {group}: no live replica")
            pieces = zip(*(torch.tensor_split(t, len(mine)) for t in (request.hidden, request.expert_ids,
                                                                        request.weights)))
            for index, (hidden, ids, weights) in zip(mine, pieces):
                if hidden.shape[0]:
                    inputs[index] = ExpertRequest(request.layer, hidden, ids, weights, request.trace)
        return inputs, {g: [i for i in slots_of.get(g, []) if inputs[i] is not None] for g in requests}

    def teardown(self) -> None:
        if not self._torn_down.acquire(blocking=False):  # once (a broken graph is torn down on a thread)
            return
        try:
            self.dag.teardown()
        except Exception as err:  # a dead replica's loop cannot be cancelled; the live ones are
            log.info("compiled graph teardown: %s", err)
