"""The per-layer transport as a Ray Compiled Graph over the expert-group replicas.

A direct actor call costs a task submission, a scheduling hop and an object-store round trip per group per
layer: about 1-3 ms on a small machine, more than the experts' own compute at decode batch sizes. A
Compiled Graph sets up shared-memory channels to every replica once; after that one layer is a write into
each replica's input channel and a read from its output channel (about 0.5 ms for two groups here).

The graph is static, so it is rebuilt whenever the replica set changes:
- the registry's version moves (autoscaling added or removed a replica): rebuilt between executions;
- an execution fails because a replica died: the graph is torn down, the dead replica (found by probing
  each one) leaves the registry, and the layers in flight are sent again by direct actor calls
  (`ActorTransport`) to the live replicas — or to the one Serve starts in place of the dead one — until the
  deadline, then `ExpertGroupUnavailable`, as with the other transports. Layers go by direct calls for
  `DIRECT_AFTER_BREAK_S`, then a new graph is built: a graph compiled at once over the surviving replicas
  could hang (their loops of the broken graph still winding down), and a hung layer costs the whole deadline;
- a build fails (a replica died since the last ping): the same, so a dead replica never stays in the graph.
Every build pings the replicas first and leaves the dead ones out (cluster/deployments/liveness.py): a
replica killed while the graph was torn down is not in the next one.

Every replica of a group gets a share of that group's tokens, so replicas add throughput, not only spares;
where a group has replicas on the router's own node, the graph takes only those (locality.py: a channel to
another node costs a network hop each way), and the others stand by for when they die.

The graph never spans nodes. Where a group has no replica on the router's node, layers go by direct actor
calls (`ActorTransport`, still least-loaded and local-first) until one has: when a node whose replicas a
compiled graph reads from is lost, Ray's raylet on the router's node aborts on the closed channel
(`experimental_mutable_object_provider.cc`, "Check failed: WriteAcquire ... Channel closed",
ray-project/ray#63229), taking the router, the HTTP proxy and Serve's controller with it. A direct call to a
lost node fails with `RayActorError` and is retried, as on one node.
Replicas of groups with no tokens in a layer receive `None` and answer `None` at once.

A router that starts ends the graph loops its replicas still run for a router that died
(graph_loops.py): such a loop waits forever on a channel nobody writes, and holds the replica's
thread for compiled graphs, so a new graph over that replica would hang until Serve replaced it.

Idle, the graph is torn down: a replica's channel reader waits by spinning (most of a core per replica, doing
nothing), so after `idle_teardown_s` without an execution a watcher thread tears the graph down, and the next
layer builds it again (`switchyard bench serve` measures both the idle CPU and what the rebuild costs).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import ray
import torch
from ray.exceptions import RayActorError, RayTaskError

from switchyard.cluster.deployments.liveness import dead_among
from switchyard.cluster.deployments.registry import LiveReplicas
from switchyard.cluster.dispatch.graph import Graph as _Graph
from switchyard.cluster.dispatch.graph import Slot as _Slot
from switchyard.cluster.dispatch.graph_loops import end_orphaned_loops
from switchyard.cluster.dispatch.locality import ReplicaNodes, local_first, this_node
from switchyard.cluster.dispatch.transport import ActorTransport, ExpertGroupUnavailable
from switchyard.experts.messages import ExpertRequest, ExpertResponse

log = logging.getLogger(__name__)

# After a replica died under a graph: direct actor calls this long, then a graph again.
DIRECT_AFTER_BREAK_S = 10.0


@dataclass
class _Pending:
    requests: dict[int, ExpertRequest]
    deadline: float
    graph: _Graph | None = None
    refs: list | None = None
    used: dict[int, list[int]] | None = None
    direct: list | None = None  # sent by direct actor calls instead (after a replica died under the graph)

    def __del__(self):
        # Dropped unread (a failed step abandons its other micro-batch): Ray frees the results; the count of
        # executions in flight must not stay up, or the graph would never be rebuilt for a new replica set.
        if self.graph is not None:
            self.graph.in_flight -= 1


class CompiledGraphTransport:
    def __init__(self, app_name: str, group_names: list[str], timeout_s: float = 30.0, refresh_s: float = 1.0,
                 max_in_flight: int = 4, idle_teardown_s: float | None = 2.0):
        self.group_names = group_names
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.live = LiveReplicas(app_name, group_names, refresh_s)
        self._direct = ActorTransport(app_name, group_names, timeout_s, live=self.live)
        self._direct_until = 0.0  # time.monotonic() until which layers go by direct calls
        end_orphaned_loops(self.live)
        self.nodes, self.here = ReplicaNodes(), this_node()
        self._live_counts: list[int] | None = None  # live replicas per group at the last build
        self.across_nodes = False  # the last build found a group with no replica here: direct calls instead
        self._lock = threading.RLock()
        self._graph: _Graph | None = None
        self._graph_version = -1  # registry version the graph was built from
        self.builds = 0  # graphs compiled so far (the first, rebuilds after idle, after a death or a new replica)
        self._last_use = time.monotonic()
        self._closed = threading.Event()
        if idle_teardown_s is not None:
            threading.Thread(target=self._tear_down_when_idle, args=(idle_teardown_s,), daemon=True,
                             name="compiled-graph-idle").start()

    def _tear_down_when_idle(self, idle_s: float) -> None:
        while not self._closed.wait(min(idle_s, 0.5)):
            if self._graph is None or time.monotonic() - self._last_use < idle_s:
                continue
            with self._lock:
                graph = self._graph
                if graph is not None and graph.in_flight == 0 and time.monotonic() - self._last_use >= idle_s:
                    self._graph = None
                    graph.teardown()
                    log.info("compiled graph torn down after %.1fs idle", idle_s)

    # -- the replica set ----------------------------------------------------------------------------------
    def _build(self) -> _Graph | None:
        self._graph_version, snapshot = self.live.snapshot(check_alive=True)
        self._live_counts = [len(replicas) for replicas in snapshot]
        self.nodes.learn({rid: actor for replicas in snapshot for rid, actor in replicas.items()})
        slots = []
        for g, replicas in enumerate(snapshot):
            ids = local_first(list(replicas), [self.nodes.node_of(rid) for rid in replicas], self.here)
            slots += [_Slot(g, rid, replicas[rid]) for rid in ids]
        if {s.group for s in slots} != set(range(len(self.group_names))):
            return None  # some group has no live replica yet (starting, or replaced after a death)
        # A replica whose node is unknown (it did not answer in time) counts as here: on one node it is.
        self.across_nodes = any(self.nodes.node_of(s.replica_id) not in (None, self.here) for s in slots)
        if self.across_nodes:
            return None
        self.builds += 1
        return _Graph(slots, self.max_in_flight, self.timeout_s)

    def _current_graph(self) -> _Graph | None:
        """The graph to execute on. Rebuilt at once when broken (what was in flight on it is sent again), and
        when the replica set changed once nothing is in flight on it (micro-batches keep executions in flight
        through a whole step, so that is between steps)."""
        graph = self._graph
        stale = self.live.latest_version != self._graph_version
        if graph is None and self.across_nodes and not stale:
            return None  # the same replica set as when it was found to span nodes: direct calls still
        if graph is None or graph.broken or (stale and graph.in_flight == 0):
            if self._graph is not None:
                self._graph.teardown()
            self._graph = self._build()
        return None if self._graph is None or self._graph.broken else self._graph

    def replica_counts(self) -> list[int]:
        """Live replicas per group: those the graph was built from (the graph may use only the local ones), or
        before the first layer (no graph yet) the registry's. Lock-free (one read of the graph reference), so
        /metrics never waits behind a layer in flight."""
        graph, counts = self._graph, self._live_counts
        if graph is not None and not graph.broken and counts is not None:
            return list(counts)
        groups = [g for g, replicas in enumerate(self.live.snapshot()[1]) for _ in replicas]
        return [groups.count(g) for g in range(len(self.group_names))]

    def close(self) -> None:
        self._closed.set()
        self._direct.close()
        self.live.close()
        with self._lock:
            if self._graph is not None:
                self._graph.teardown()
                self._graph = None

    # -- calls --------------------------------------------------------------------------------------------
    def send(self, requests: dict[int, ExpertRequest]) -> _Pending:
        pending = _Pending(requests, time.monotonic() + self.timeout_s)
        if time.monotonic() < self._direct_until:
            pending.direct = self._direct.send(requests)
        else:
            self._execute(pending)
        return pending

    def _execute(self, pending: _Pending) -> None:
        while True:
            with self._lock:
                self._last_use = time.monotonic()
                try:
                    graph = self._current_graph()
                except Exception as err:  # the build failed: a replica died since its ping, or is dying
                    log.warning("compiled graph build failed (%s); retrying over the live replicas", err)
                    self._graph, graph = None, None
                    self.live.snapshot(check_alive=True)
                if graph is None and self.across_nodes:  # a graph would span nodes: never (module docstring)
                    pending.direct = self._direct.send(pending.requests)
                    return
                if graph is not None:
                    inputs, pending.used = graph.split(pending.requests)
                    try:
                        pending.refs = graph.dag.execute(*inputs)
                        pending.graph = graph
                        graph.in_flight += 1
                        return
                    except Exception as err:  # Ray tore the graph down: one of its replicas died
                        log.warning("compiled graph closed (%s); direct calls for a while", err)
                        self._break(graph)
                        pending.direct = self._direct.send(pending.requests)
                        return
            # no graph (a group has no live replica yet) or it just broke: wait a little, up to the deadline
            if time.monotonic() > pending.deadline:
                missing = [self.group_names[g] for g in pending.requests]
                raise ExpertGroupUnavailable(f"expert groups {missing}: no live replica")
            time.sleep(0.1)

    def called(self, pending: _Pending) -> dict[int, list[str]]:
        """The replicas that `send` gave each group's tokens to (for a dispatch span)."""
        if pending.direct is not None:
            return self._direct.called(pending.direct)
        slots = pending.graph.slots if pending.graph is not None else []
        return {group: [slots[i].replica_id for i in used] for group, used in (pending.used or {}).items()}

    def receive(self, pending: _Pending) -> dict[int, ExpertResponse]:
        while True:
            if pending.direct is not None:
                return self._direct.receive(pending.direct)
            remaining = pending.deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                with self._lock:  # a compiled graph is not safe to drive from two threads at once
                    results = ray.get(pending.refs, timeout=remaining)
            except RayTaskError as err:
                if isinstance(err, RayActorError):  # Ray's error types multiply inherit: a death, seen as a task's
                    self._retry_after_death(pending, err)
                    continue
                self._finish(pending)  # the experts raised: a bad request, not a dead replica
                raise
            except TimeoutError as err:
                self._finish(pending, broken=True)  # a result is still owed; the graph cannot be reused
                raise ExpertGroupUnavailable(f"expert groups: no answer within {self.timeout_s:.0f}s") from err
            except Exception as err:  # a channel closed: a replica died
                self._retry_after_death(pending, err)
                continue
            self._finish(pending)
            self._last_use = time.monotonic()
            return {group: ExpertResponse(pending.requests[group].layer,
                                          torch.cat([results[i].hidden for i in slots]))
                    for group, slots in pending.used.items()}

    def _retry_after_death(self, pending: _Pending, err: Exception) -> None:
        log.warning("compiled graph failed (%s); the layer again by direct calls", type(err).__name__)
        graph = pending.graph
        self._finish(pending, broken=True)
        self._break(graph)
        pending.direct = self._direct.send(pending.requests)

    def _break(self, graph: _Graph | None) -> None:
        """A replica died under `graph`: out of the registry, the graph torn down (on a thread: Ray's teardown
        waits for the loops it cancels), direct calls for a while."""
        self._direct_until = time.monotonic() + DIRECT_AFTER_BREAK_S
        if graph is None:
            return
        graph.broken = True
        self._drop_dead(graph)
        threading.Thread(target=graph.teardown, daemon=True, name="compiled-graph-teardown").start()

    def _finish(self, pending: _Pending, broken: bool = False) -> None:
        graph, pending.graph = pending.graph, None
        if graph is not None:
            with self._lock:
                graph.in_flight -= 1
                graph.broken = graph.broken or broken

    def _drop_dead(self, graph: _Graph | None) -> None:
        if graph is None:
            return
        for index in dead_among({i: slot.actor for i, slot in enumerate(graph.slots)}):
            self.live.mark_dead(graph.slots[index].group, graph.slots[index].replica_id)
