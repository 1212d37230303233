"""Which actors serve each expert group right now.

Each expert-group replica registers its own actor handle when it starts and leaves when it stops, so the
router's direct-call transports follow the replica set as autoscaling grows and shrinks it. A replica that
dies without leaving is dropped by the router: on its first failed call, by the ping before every compiled
graph is built, and by the router's follower, which pings every registered replica every few seconds
(`LiveReplicas`, cluster/deployments/liveness.py).

It also holds the app's placement, versioned, for re-placement while serving (cluster/replacement/replacer.py). Version
0 is the placement the app was deployed with (the replicas' bound assignment); a switch to version w first
sets a target: from then on a replica may join only holding the experts of both the current and the target
version (`register_holding` says what it lacks), so whatever starts during a switch can serve either; the
commit makes w current, and replicas then need only w's experts. State is kept per deployment id (one per
`build_app`), so a redeployed app under the same name starts again from its own version 0.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import ray

REGISTRY_NAMESPACE = "switchyard"


@dataclass(frozen=True)
class PlacementState:
    """A deployment's placement versions: JSON text (Placement.to_json), None for version 0 (the bound one)."""

    version: int = 0
    placement: str | None = None
    target_version: int | None = None
    target: str | None = None

    def needed(self) -> tuple[int, ...]:
        """Versions whose experts a serving replica must hold now."""
        return (self.version,) if self.target_version is None else (self.version, self.target_version)

    def json_of(self, version: int) -> str | None:
        if version == self.version:
            return self.placement
        if version == self.target_version:
            return self.target
        raise KeyError(f"placement version {version} is neither current ({self.version}) nor the target")


class PlacementConflict(RuntimeError):
    """A switch asked for while another is under way, or from a version that is no longer current."""


@ray.remote(num_cpus=0)
class ReplicaRegistry:
    def __init__(self):
        self._replicas: dict[str, dict[str, object]] = {}  # group name -> replica id -> actor handle
        self._version = 0
        self._floor: dict[str, tuple[float, float]] = {}  # group name -> (rows/s the router expects, when)
        self._placements: dict[str, PlacementState] = {}  # deployment id -> its placement versions

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

    # -- placement versions -------------------------------------------------------------------------------
    def placement_state(self, deploy_id: str) -> PlacementState:
        return self._placements.get(deploy_id, PlacementState())

    def register_holding(self, group: str, replica_id: str, actor, deploy_id: str,
                         holds: tuple[int, ...]) -> tuple[bool, PlacementState]:
        """Join only if the replica holds the experts of every version needed now; (joined, the state)."""
        state = self.placement_state(deploy_id)
        if not set(state.needed()) <= set(holds):
            return False, state
        self.register(group, replica_id, actor)
        return True, state

    def begin_switch(self, deploy_id: str, from_version: int, placement: str) -> PlacementState:
        state = self.placement_state(deploy_id)
        if state.target_version is not None:
            raise PlacementConflict(f"a switch to placement version {state.target_version} is under way")
        if state.version != from_version:
            raise PlacementConflict(f"placement version {from_version} is no longer current ({state.version} is)")
        self._placements[deploy_id] = PlacementState(state.version, state.placement, state.version + 1, placement)
        return self._placements[deploy_id]

    def end_switch(self, deploy_id: str, version: int, commit: bool) -> PlacementState:
        """Make the target current (commit), or forget it (abort); either way one version is needed again."""
        state = self.placement_state(deploy_id)
        if state.target_version != version:
            raise PlacementConflict(f"no switch to placement version {version} is under way")
        if commit:
            self._placements[deploy_id] = PlacementState(version, state.target)
        else:
            self._placements[deploy_id] = PlacementState(state.version, state.placement)
        return self._placements[deploy_id]

    def snapshot(self) -> tuple[int, dict[str, dict[str, object]]]:
        return self._version, {g: dict(r) for g, r in self._replicas.items()}


# The head node's own resource (Ray gives it every head node): the registry lives there, beside Serve's
# controller. Left to the scheduler, it landed on whichever node the first replica to ask was on, and a lost
# expert node took it along: the router then held a handle to a dead registry and failed every step, while
# the replica that replaced the lost one joined a new registry that the router never saw.
_ON_THE_HEAD = {"node:__internal_head__": 0.001}


def get_registry(app_name: str):
    """The app's registry, created by whichever replica asks first, on the head node. Detached, so it outlives
    any replica; scheduled by default, so it leaves the placement group of a replica that creates it."""
    return ReplicaRegistry.options(name=f"{app_name}-registry", namespace=REGISTRY_NAMESPACE,
                                   get_if_exists=True, lifetime="detached", resources=_ON_THE_HEAD,
                                   scheduling_strategy="DEFAULT").remote()


class LiveReplicas:
    """A router's view of the registry: each group's replicas, less the ones this router found dead.

    Shared by the transports that call replicas' actors directly. A replica that is killed never leaves the
    registry itself, so `mark_dead` removes it there too (replica counts, cost and other routers then see only
    live replicas), and keeps it out of later snapshots that still list it. A thread keeps `latest_version`,
    the registry's version, fresh, so a transport can tell cheaply when its own state is stale, and every
    `sweep_every` refreshes pings the registered replicas and drops the dead ones: a replica killed while the
    router is idle has left the registry before the next request.
    """

    def __init__(self, app_name: str, group_names: list[str], refresh_s: float = 1.0, sweep_every: int = 2):
        self.group_names = group_names
        self.registry = get_registry(app_name)
        self.latest_version = -1
        self._dead: set[str] = set()
        self._stop = threading.Event()
        threading.Thread(target=self._follow, args=(refresh_s, sweep_every), daemon=True,
                         name="switchyard-registry-follower").start()

    def snapshot(self, check_alive: bool = False) -> tuple[int, list[dict[str, object]]]:
        """(registry version, per group index: replica id -> actor handle), without replicas found dead;
        `check_alive` pings them first (a compiled graph over a dead actor fails to build)."""
        version, replicas = ray.get(self.registry.snapshot.remote())
        self.latest_version = version
        if check_alive:
            self.drop_dead(replicas)
        dead = set(self._dead)  # a copy: another thread may add to it
        return version, [{rid: actor for rid, actor in replicas.get(name, {}).items() if rid not in dead}
                         for name in self.group_names]

    def drop_dead(self, replicas: dict[str, dict[str, object]]) -> int:
        """Ping `replicas` (group name -> replica id -> actor) and mark the dead ones; how many were new."""
        from switchyard.cluster.deployments.liveness import dead_among

        index = {name: g for g, name in enumerate(self.group_names)}
        actors = {(index[name], rid): actor for name, group in replicas.items() if name in index
                  for rid, actor in group.items() if rid not in self._dead}
        return sum(self.mark_dead(group, rid) for group, rid in dead_among(actors))

    def mark_dead(self, group: int, replica_id: str) -> bool:
        """Keep a replica out from now on; False if it was already out."""
        if replica_id in self._dead:
            return False
        self._dead.add(replica_id)
        self.registry.unregister.remote(self.group_names[group], replica_id)
        return True

    def close(self) -> None:
        self._stop.set()

    def _follow(self, every_s: float, sweep_every: int) -> None:
        ticks = 0
        while not self._stop.wait(every_s):
            ticks += 1
            try:
                if ticks % sweep_every == 0:
                    _, replicas = ray.get(self.registry.snapshot.remote(), timeout=5)
                    self.drop_dead(replicas)
                self.latest_version = ray.get(self.registry.version.remote(), timeout=5)
            except Exception:  # the registry is briefly unreachable; keep the last version seen
                pass


def assignment_for(state: PlacementState, versions, bound: dict[int, list[int]], group: int) -> dict[int, list[int]]:
    """{layer: expert ids} group `group` holds to serve every placement version in `versions` (a union);
    version 0 without JSON is `bound`, the assignment the replica was deployed with."""
    from switchyard.router.affinity.placement import Placement

    union: dict[int, set[int]] = {}
    for version in versions:
        text = state.json_of(version)
        experts = bound if text is None else Placement.from_json(text).experts_of_group(group)
        for layer, ids in experts.items():
            union.setdefault(int(layer), set()).update(int(e) for e in ids)
    return {layer: sorted(ids) for layer, ids in union.items()}
