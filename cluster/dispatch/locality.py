"""Which node each expert-group replica runs on, and the replica choice that prefers the router's own node.

A call to a replica on the router's node stays in the node's shared memory; one to another node crosses the
network (an object transfer each way). So where a group has a live replica on the router's node, the
transports use it (the least loaded of them), and otherwise the least loaded replica anywhere. On one node
every replica is local, and the choice is the plain least-loaded one.

A replica's node is asked once, from the replica itself, and kept (a replica never moves: one started on
another node after a death has a new id).
"""

from __future__ import annotations

import threading
from typing import Sequence, TypeVar

import ray

T = TypeVar("T")


def _node_id(_actor) -> str:
    return ray.get_runtime_context().get_node_id()


def this_node() -> str | None:
    """The Ray node id of this process (None outside Ray)."""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


class ReplicaNodes:
    """Replica id -> its node id, asked of each replica once. Unknown (a replica that did not answer): None."""

    def __init__(self, timeout_s: float = 5.0):
        self.timeout_s = timeout_s
        self._nodes: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def learn(self, replicas: dict[str, object]) -> None:
        """Ask every replica not yet known (replica id -> actor handle) for its node, all at once."""
        with self._lock:
            new = {rid: actor for rid, actor in replicas.items() if rid not in self._nodes}
        if not new:
            return
        refs = {rid: actor.__ray_call__.remote(_node_id) for rid, actor in new.items()}
        found: dict[str, str | None] = {}
        for rid, ref in refs.items():
            try:
                found[rid] = ray.get(ref, timeout=self.timeout_s)
            except Exception:  # dead or not answering: not known to be local; the call itself will find out
                found[rid] = None
        with self._lock:
            self._nodes.update(found)

    def node_of(self, replica_id: str) -> str | None:
        return self._nodes.get(replica_id)


def local_first(items: Sequence[T], nodes: Sequence[str | None], here: str | None) -> list[T]:
    """The items on node `here` if there are any, else all of them (order kept)."""
    local = [item for item, node in zip(items, nodes) if here is not None and node == here]
    return local or list(items)
