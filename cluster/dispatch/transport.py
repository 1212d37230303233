"""The per-layer transport from the router to the expert groups, behind one interface.

One call of `send` carries one layer's requests (one per group that has tokens); `receive` returns their
responses. Implementations:

- `HandleTransport`: Ray Serve deployment handles. Serve picks the replica; each call pays Serve's
  request path (routing, queue-length probes, metrics).
- `ActorTransport`: direct calls into the replicas' actors (`__ray_call__`), replicas taken from the
  registry that every group replica joins, so the set follows autoscaling. The router picks the replica
  with the fewest calls in flight, among those on its own node where the group has any (locality.py).
- `CompiledGraphTransport` (compiled_graph.py; the graph itself in graph.py): a Ray Compiled Graph over the
  same registry's replicas; shared-memory channels instead of a task submission per call.

Both retry a call that fails because a replica died — on another replica, or on the one Serve starts in its
place — until the deadline, then raise `ExpertGroupUnavailable`. A call never hangs past the deadline.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from switchyard.cluster.deployments.expert_group import call_group
from switchyard.cluster.deployments.registry import LiveReplicas
from switchyard.cluster.dispatch.locality import ReplicaNodes, local_first, this_node
from switchyard.experts.messages import ExpertRequest, ExpertResponse


class ExpertGroupUnavailable(RuntimeError):
    """No replica of an expert group answered in time."""


class ExpertTransport(Protocol):
    def send(self, requests: dict[int, ExpertRequest]) -> object:
        """Start one layer: group index -> that group's request. Returns at once."""

    def receive(self, pending: object) -> dict[int, ExpertResponse]:
        """Wait for what `send` started; raises ExpertGroupUnavailable past the deadline."""

    def called(self, pending: object) -> dict[int, list[str]]:
        """Group index -> the replicas `send` called (for a dispatch span; "serve" where Serve picks)."""

    def close(self) -> None:
        """Stop background work (a registry follower, a compiled graph)."""


class _OneCallPerGroup:
    """send/receive for transports that make an independent call per group."""

    def send(self, requests: dict[int, ExpertRequest]) -> list:
        return [self._send_one(group, request) for group, request in requests.items()]

    def receive(self, pending: list) -> dict[int, ExpertResponse]:
        return {call.group: self._receive_one(call) for call in pending}

    def called(self, pending: list) -> dict[int, list[str]]:
        return {call.group: [call.replica or "serve"] for call in pending}


@dataclass
class _Call:
    group: int
    request: ExpertRequest
    deadline: float
    future: object = None
    replica: str | None = None
    attempts: int = 0


class HandleTransport(_OneCallPerGroup):
    def __init__(self, handles: list, timeout_s: float = 30.0):
        self.handles = handles
        self.timeout_s = timeout_s

    def close(self) -> None:  # Serve owns the handles
        pass

    def _send_one(self, group: int, request: ExpertRequest) -> _Call:
        call = _Call(group, request, time.monotonic() + self.timeout_s)
        call.future = self.handles[group].forward.remote(request)
        return call

    def _receive_one(self, call: _Call) -> ExpertResponse:
        while True:
            remaining = call.deadline - time.monotonic()
            if remaining <= 0:
                raise ExpertGroupUnavailable(f"expert group {call.group}: no answer within {self.timeout_s:.0f}s")
            try:
                return call.future.result(timeout_s=remaining)
            except TimeoutError as err:
                raise ExpertGroupUnavailable(f"expert group {call.group}: no answer within {self.timeout_s:.0f}s") from err
            except (RayActorError, ray.exceptions.RayTaskError) as err:
                if isinstance(err, ray.exceptions.RayTaskError) and not _is_replica_death(err):
                    raise
                call.attempts += 1
                time.sleep(min(0.05 * 2 ** call.attempts, 1.0))
                call.future = self.handles[call.group].forward.remote(call.request)


def _is_replica_death(err: Exception) -> bool:
    return isinstance(getattr(err, "cause", None), RayActorError) or "ActorDied" in type(err).__name__


@dataclass
class _Replica:
    replica_id: str
    actor: object
    in_flight: int = 0


@dataclass
class _GroupReplicas:
    replicas: list[_Replica] = field(default_factory=list)
    turn: itertools.count = field(default_factory=itertools.count)


class ActorTransport(_OneCallPerGroup):
    def __init__(self, app_name: str, group_names: list[str], timeout_s: float = 30.0, refresh_s: float = 1.0,
                 live: LiveReplicas | None = None):
        """`live`: a registry view shared with another transport (the compiled graph's fallback); else its own."""
        self.group_names = group_names
        self.timeout_s = timeout_s
        self._owns_live = live is None
        self.live = live if live is not None else LiveReplicas(app_name, group_names, refresh_s)
        self.nodes, self.here = ReplicaNodes(), this_node()
        self._groups = [_GroupReplicas() for _ in group_names]
        self._lock = threading.Lock()
        self._version = -1  # registry version of the replica lists below
        self.refresh()

    # -- the replica set ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        version, snapshot = self.live.snapshot()
        self.nodes.learn({rid: actor for replicas in snapshot for rid, actor in replicas.items()})
        with self._lock:
            if version == self._version:
                return
            self._version = version
            for group, replicas in zip(self._groups, snapshot):
                known = {r.replica_id: r for r in group.replicas}
                group.replicas = [known.get(rid) or _Replica(rid, actor) for rid, actor in replicas.items()]

    def replica_counts(self) -> list[int]:
        with self._lock:
            return [len(g.replicas) for g in self._groups]

    def close(self) -> None:
        if self._owns_live:
            self.live.close()

    # -- calls --------------------------------------------------------------------------------------------
    def _send_one(self, group: int, request: ExpertRequest) -> _Call:
        call = _Call(group, request, time.monotonic() + self.timeout_s)
        self._dispatch(call)
        return call

    def _dispatch(self, call: _Call) -> None:
        if self.live.latest_version != self._version:  # autoscaling changed the set (seen by the follower)
            self.refresh()
        while True:
            with self._lock:
                replicas = local_first(self._groups[call.group].replicas,
                                       [self.nodes.node_of(r.replica_id) for r in self._groups[call.group].replicas],
                                       self.here)
                if replicas:
                    least = min(r.in_flight for r in replicas)
                    candidates = [r for r in replicas if r.in_flight == least]
                    replica = candidates[next(self._groups[call.group].turn) % len(candidates)]
                    replica.in_flight += 1
                    break
            if time.monotonic() > call.deadline:
                raise ExpertGroupUnavailable(f"expert group {self.group_names[call.group]}: no live replica")
            time.sleep(0.1)
            self.refresh()
        call.replica = replica.replica_id
        self._start(call, replica)

    def _start(self, call: _Call, replica: _Replica) -> None:
        """Send the call to the chosen replica (a direct call into its actor)."""
        call.future = replica.actor.__ray_call__.remote(call_group, call.request)

    def _done(self, call: _Call, dead: bool) -> None:
        with self._lock:
            group = self._groups[call.group]
            for r in group.replicas:
                if r.replica_id == call.replica:
                    r.in_flight -= 1
            if dead and self.live.mark_dead(call.group, call.replica):
                group.replicas = [r for r in group.replicas if r.replica_id != call.replica]
                self._version = -1  # take the registry's view again on the next refresh

    def _no_answer(self, call: _Call) -> ExpertGroupUnavailable:
        return ExpertGroupUnavailable(f"expert group {self.group_names[call.group]}: no answer within "
                                      f"{self.timeout_s:.0f}s")

    def _receive_one(self, call: _Call) -> ExpertResponse:
        while True:
            remaining = call.deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise GetTimeoutError()
                response = ray.get(call.future, timeout=remaining)
            except GetTimeoutError as err:
                self._done(call, dead=False)
                raise self._no_answer(call) from err
            except RayActorError:
                self._done(call, dead=True)
                call.attempts += 1
                self._dispatch(call)  # another replica, or the one Serve starts in place of the dead one
                continue
            self._done(call, dead=False)
            return response
