"""Compiled-graph loops that outlive the router that built them.

A replica in a compiled graph runs Ray's loop (`do_exec_tasks`) on its thread for compiled graphs: it reads its
input channel, runs the layer, writes its output channel, again and again. When the router that writes those
inputs dies (SIGKILL, a lost node), nobody tears the graph down: the loop waits forever on a channel nobody
writes, and a new router's graph over that replica hangs until Serve replaces the replica (its health checks
time out behind the blocked build). A router that starts therefore ends such loops first.
"""

from __future__ import annotations

import logging

import ray

from switchyard.cluster.deployments.registry import LiveReplicas

log = logging.getLogger(__name__)


def _end_graph_loops(_actor) -> int:
    """Runs in an expert-group replica: close the channels of every compiled-graph loop it runs, as Ray's own
    teardown does (`do_cancel_executable_tasks`), so the loops end. Ray keeps no list of them on the actor: the
    executable tasks are found among the process's objects. How many were closed."""
    import gc

    from ray.dag.compiled_dag_node import ExecutableTask

    closed = 0
    for task in [o for o in gc.get_objects() if isinstance(o, ExecutableTask)]:
        try:
            task.cancel()
            closed += 1
        except Exception:  # its channels were closed already
            pass
    return closed


def end_orphaned_loops(live: LiveReplicas, timeout_s: float = 10.0) -> None:
    """At a router's start: no graph is this router's yet, so every loop the replicas run is of a router that
    died (one compiled-graph router per app: several would each need every replica's loop)."""
    _, snapshot = live.snapshot()
    refs = [actor.__ray_call__.remote(_end_graph_loops) for replicas in snapshot for actor in replicas.values()]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    for ref in ready:
        try:
            if ray.get(ref):
                log.warning("ended the compiled-graph loops of a router that died")
        except Exception:  # a dead replica: the graph's build leaves it out
            pass
