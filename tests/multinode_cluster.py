"""A real multi-node Ray on this machine for the tests that need one: Ray's own harness
(`ray.cluster_utils.Cluster`), a head and worker nodes as separate raylets, each with its own labels and CPUs.

The head is the router's node (label `switchyard.io/node-type: router`); each expert group has a worker node of
its own (label `switchyard.io/expert-group: "<g>"`), as the Helm chart's worker groups are in production. The
app's pools select them with `nodes.label_selector` (configs/node_placement.py), so Ray, not the test, decides
where each replica runs, and the test reads back where it did.

One Python process can be connected to one Ray cluster only: the suite's single-node `ray_serve` fixture is shut
down before this cluster starts, and `tests/conftest.py` runs the tests that use this cluster after all others.
"""

from __future__ import annotations

import os
import socket
import threading

import ray
from ray import serve
from ray.cluster_utils import Cluster

NODE_TYPE, EXPERT_GROUP = "switchyard.io/node-type", "switchyard.io/expert-group"
TEMP_DIR = "/tmp/r-multinode"  # short: Ray's socket paths must stay under 107 bytes
# Logical CPUs: the replicas take fractions and mostly wait on one another; the 2 real cores are shared anyway.
NODE_ARGS = {"num_cpus": 1, "object_store_memory": 100 << 20}


class MultiNode:
    """The cluster, its Serve HTTP address, and the worker node of each expert group (replaced ones included)."""

    def __init__(self, num_groups: int = 2, attempts: int = 3):
        os.makedirs(TEMP_DIR, exist_ok=True)
        for attempt in range(attempts):
            # Ray gives a node 30 s to register with the GCS; on a machine busy with other work it can miss that
            try:
                self.cluster = Cluster(initialize_head=True, head_node_args={
                    **NODE_ARGS, "labels": {NODE_TYPE: "router"}, "include_dashboard": False, "temp_dir": TEMP_DIR})
                self.group_nodes = {g: self.add_group_node(g) for g in range(num_groups)}
                break
            except Exception:
                if getattr(self, "cluster", None) is not None:
                    self.cluster.shutdown()
                if attempt == attempts - 1:
                    raise
        ray.init(address=self.cluster.address, log_to_driver=False)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # one HTTP proxy, on the head: a proxy per node would cost a process each and add nothing here
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        self.url = f"http://127.0.0.1:{port}"

    def add_group_node(self, group: int):
        return self.cluster.add_node(**NODE_ARGS, labels={EXPERT_GROUP: str(group)})

    def replace_group_node(self, group: int) -> None:
        """Remove the node of `group` (killing whatever runs there), then add a fresh one with its label."""
        self.cluster.remove_node(self.group_nodes.pop(group), allow_graceful=False)
        self.group_nodes[group] = self.add_group_node(group)

    def remove_group_node(self, group: int) -> None:
        self.cluster.remove_node(self.group_nodes.pop(group), allow_graceful=False)

    @property
    def head_node_id(self) -> str:
        return self.cluster.head_node.node_id

    def node_labels(self) -> dict[str, dict[str, str]]:
        """Node id -> labels, of the nodes alive now."""
        return {n["NodeID"]: n.get("Labels", {}) for n in ray.nodes() if n["Alive"]}

    def shutdown(self) -> None:
        # Bounded: serve.shutdown waits forever on a controller whose node died (a test may have lost the head).
        stopping = threading.Thread(target=serve.shutdown, daemon=True)
        stopping.start()
        stopping.join(60)
        ray.shutdown()
        self.cluster.shutdown()


def node_placement_config(config: dict) -> dict:
    """An app config (tests/test_cluster.py's `app_config`) with the router on the head and each expert group on
    its own worker node."""
    config["router_pool"]["nodes"] = {"label_selector": {NODE_TYPE: "router"}}
    config["expert_pool"]["nodes"] = {"label_selector": {EXPERT_GROUP: "{group}"}}
    return config


def replica_nodes(app_prefix: str) -> dict[str, list[str]]:
    """Deployment name -> the node ids of its live replicas, each asked of the replica itself."""
    from switchyard.cluster.dispatch.locality import _node_id

    asked: dict[str, list] = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"]
        if name.startswith("SERVE_REPLICA::") and f"#{app_prefix}" in name:
            actor = ray.get_actor(name, namespace=entry["namespace"])
            asked.setdefault(name.split("#")[1], []).append(actor.__ray_call__.remote(_node_id))
    found: dict[str, list[str]] = {}
    for deployment, refs in asked.items():
        for ref in refs:
            try:
                found.setdefault(deployment, []).append(ray.get(ref, timeout=10))
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                pass  # died (its node was removed): not live
    return found
