"""Which actors serve each expert group right now.

Each expert-group replica registers its own actor handle when it starts and leaves when it stops, so the
router's direct-call transport follows the replica set as autoscaling grows and shrinks it. A replica that
dies without leaving is dropped by the router on its first failed call.
"""

from __future__ import annotations

import ray

REGISTRY_NAMESPACE = "switchyard"


@ray.remote(num_cpus=0)
class ReplicaRegistry:
    def __init__(self):
        self._replicas: dict[str, dict[str, object]] = {}  # group name -> replica id -> actor handle
        self._version = 0

    def register(self, group: str, replica_id: str, actor) -> None:
        self._replicas.setdefault(group, {})[replica_id] = actor
        self._version += 1

    def unregister(self, group: str, replica_id: str) -> None:
        if self._replicas.get(group, {}).pop(replica_id, None) is not None:
            self._version += 1

    def version(self) -> int:
        return self._version

    def snapshot(self) -> tuple[int, dict[str, dict[str, object]]]:
        return self._version, {g: dict(r) for g, r in self._replicas.items()}


def get_registry(app_name: str):
    """The app's registry, created by whichever replica asks first. Detached, so it outlives any replica."""
    return ReplicaRegistry.options(name=f"{app_name}-registry", namespace=REGISTRY_NAMESPACE,
                                   get_if_exists=True, lifetime="detached").remote()
