"""Which actors serve each expert group right now.

Each expert-group replica registers its own actor handle when it starts and leaves when it stops, so the
router's direct-call transports follow the replica set as autoscaling grows and shrinks it. A replica that
dies without leaving is dropped by the router on its first failed call (`LiveReplicas.mark_dead`).
"""

from __future__ import annotations

import threading
import time

import ray

REGISTRY_NAMESPACE = "switchyard"


@ray.remote(num_cpus=0)
class ReplicaRegistry:
    def __init__(self):
        self._replicas: dict[str, dict[str, object]] = {}  # group name -> replica id -> actor handle
        self._version = 0
        self._floor: dict[str, tuple[float, float]] = {}  # group name -> (rows/s the router expects, when)

    def register(self, group: str, replica_id: str, actor) -> None:
        self._replicas.setdefault(group, {})[replica_id] = actor
        self._version += 1

    def unregister(self, group: str, replica_id: str) -> None:
        if self._replicas.get(group, {}).pop(replica_id, None) is not None:
            self._version += 1

    def report_floor(self, floors: dict[str, float]) -> None:
        """The router's expected rows/s per group (its queued work): a floor for the groups' autoscaling."""
        now = time.monotonic()
        self._floor.update({group: (rows, now) for group, rows in floors.items()})

    def demand(self, group: str, groups: list[str], max_age_s: float = 5.0) -> tuple[float, list[int]]:
        """(the group's floor in rows/s, 0 once stale; replicas registered in each of `groups`)."""
        rows, at = self._floor.get(group, (0.0, 0.0))
        floor = rows if time.monotonic() - at <= max_age_s else 0.0
        return floor, [len(self._replicas.get(g, {})) for g in groups]

    def version(self) -> int:
        return self._version

    def snapshot(self) -> tuple[int, dict[str, dict[str, object]]]:
        return self._version, {g: dict(r) for g, r in self._replicas.items()}


def get_registry(app_name: str):
    """The app's registry, created by whichever replica asks first. Detached, so it outlives any replica."""
    return ReplicaRegistry.options(name=f"{app_name}-registry", namespace=REGISTRY_NAMESPACE,
                                   get_if_exists=True, lifetime="detached").remote()


class LiveReplicas:
    """A router's view of the registry: each group's replicas, less the ones this router found dead.

    Shared by the transports that call replicas' actors directly. A replica that is killed never leaves the
    registry itself, so `mark_dead` removes it there too (replica counts, cost and other routers then see only
    live replicas), and keeps it out of later snapshots that still list it. A thread keeps `latest_version`,
    the registry's version, fresh, so a transport can tell cheaply when its own state is stale.
    """

    def __init__(self, app_name: str, group_names: list[str], refresh_s: float = 1.0):
        self.group_names = group_names
        self.registry = get_registry(app_name)
        self.latest_version = -1
        self._dead: set[str] = set()
        self._stop = threading.Event()
        threading.Thread(target=self._follow, args=(refresh_s,), daemon=True, name="switchyard-registry-follower").start()

    def snapshot(self) -> tuple[int, list[dict[str, object]]]:
        """(registry version, per group index: replica id -> actor handle), without replicas found dead."""
        version, replicas = ray.get(self.registry.snapshot.remote())
        self.latest_version = version
        dead = set(self._dead)  # a copy: another thread may add to it
        return version, [{rid: actor for rid, actor in replicas.get(name, {}).items() if rid not in dead}
                         for name in self.group_names]

    def mark_dead(self, group: int, replica_id: str) -> bool:
        """Keep a replica out from now on; False if it was already out."""
        if replica_id in self._dead:
            return False
        self._dead.add(replica_id)
        self.registry.unregister.remote(self.group_names[group], replica_id)
        return True

    def close(self) -> None:
        self._stop.set()

    def _follow(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self.latest_version = ray.get(self.registry.version.remote(), timeout=5)
            except Exception:  # the registry is briefly unreachable; keep the last version seen
                pass
