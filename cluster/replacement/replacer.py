"""Applying a new placement while the app serves: load, switch between two steps, drop. Nothing stops.

    1. begin   the registry's target becomes the new version: a replica that starts from now on joins only
               holding the experts of both versions (cluster/deployments/registry.py), so it can serve either;
    2. load    every registered replica of every group loads the experts the new placement gives its group
               and it lacks, on a thread of its own while it keeps serving (deployments/expert_group.py change_experts);
               the router polls until all are done;
    3. switch  between two engine steps (AsyncEngine.call_between_steps) the router's dispatch tables become
               the new placement's; every replica holds both versions' experts, so the steps before and after
               both find theirs, and one step never mixes two placements;
    4. commit  the new version is current; every replica drops what it no longer needs.

A failure in 1-2 (a replica that cannot load, past the deadline) aborts: the tables never changed, the registry
goes back to the old version and the extras are dropped. From 3 on nothing can fail a request: a replica that
fails to drop only holds more memory. A replica that dies during a switch is left out (Serve starts another,
which loads what the registry says). One router replica only: with several, each would have to switch its own
tables before the commit (refused at the endpoint, cluster/api/placement_routes.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from dataclasses import asdict, dataclass

from ray.exceptions import RayActorError

from switchyard.cluster.deployments.expert_group import change_experts, change_status
from switchyard.cluster.deployments.registry import PlacementState
from switchyard.router.affinity.placement import Placement

log = logging.getLogger(__name__)

POLL_S = 0.05


class SwitchFailed(RuntimeError):
    """A switch was aborted before the router changed its tables; the old placement still serves."""


@dataclass
class SwitchReport:
    version: int
    replicas: int  # replicas that loaded and dropped
    experts_loaded: int  # (layer, group, expert) copies the new placement adds
    load_s: float
    switch_s: float  # from asking the engine thread to the switch between two steps
    drop_s: float
    total_s: float

    def to_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


class Replacer:
    """Runs one switch at a time for a router."""

    def __init__(self, registry, deploy_id: str, group_names: list[str], placement: Placement, version: int,
                 prepare, switch, call_between_steps, timeout_s: float = 120.0):
        """`prepare(placement)` builds what `switch` installs (the router's dispatch tables), off the engine
        thread; `call_between_steps(fn)` runs fn on the engine thread between two steps, a future of its result."""
        self.registry, self.deploy_id, self.group_names = registry, deploy_id, group_names
        self.placement, self.version = placement, version
        self._prepare, self._switch, self._call_between_steps = prepare, switch, call_between_steps
        self.timeout_s = timeout_s
        self._lock = asyncio.Lock()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def apply(self, placement: Placement) -> SwitchReport:
        async with self._lock:
            return await self._apply(placement)

    async def _apply(self, placement: Placement) -> SwitchReport:
        start = time.perf_counter()
        old = self.placement
        moved = int((placement.holds & ~old.holds).sum())
        state: PlacementState = await self.registry.begin_switch.remote(self.deploy_id, self.version,
                                                                        placement.to_json())
        target = state.target_version
        union = [{layer: sorted(set(a) | set(b)) for (layer, a), b in
                  zip(old.experts_of_group(g).items(), placement.experts_of_group(g).values())}
                 for g in range(placement.num_groups)]
        try:
            replicas = await self._change_all("hold", union)
        except BaseException as err:
            await self.registry.end_switch.remote(self.deploy_id, target, False)
            await self._change_all("retain", [old.experts_of_group(g) for g in range(placement.num_groups)],
                                   strict=False)
            raise SwitchFailed(f"loading the new experts failed, the old placement serves on: {err}") from err
        loaded = time.perf_counter()
        prepared = self._prepare(placement)
        outcome = _Outcome()

        def switch() -> None:  # on the engine thread; a no-op once the wait for it gave up
            outcome.decide("switched", lambda: self._switch(prepared))

        try:
            await asyncio.wait_for(asyncio.wrap_future(self._call_between_steps(switch)), self.timeout_s)
        except BaseException as err:  # a step stuck past the timeout, or the engine failed: old tables, unless
            # the switch landed just as the wait gave up, in which case it is committed like any other
            if outcome.decide("cancelled") == "cancelled":
                await self.registry.end_switch.remote(self.deploy_id, target, False)
                raise SwitchFailed(f"the router could not switch its tables: {err}") from err
            log.warning("the switch landed as its wait gave up (%s); committing it", type(err).__name__)
        switched = time.perf_counter()
        await self.registry.end_switch.remote(self.deploy_id, target, True)
        self.placement, self.version = placement, target
        await self._change_all("retain", [placement.experts_of_group(g) for g in range(placement.num_groups)],
                               strict=False)
        done = time.perf_counter()
        return SwitchReport(target, replicas, moved, loaded - start, switched - loaded, done - switched, done - start)

    async def _change_all(self, op: str, assignments: list[dict[int, list[int]]], strict: bool = True) -> int:
        """Run `op` on every registered replica, each with its group's assignment; the replicas changed. A dead
        replica is skipped; any other failure raises (strict) or is logged."""
        _, by_group = await self.registry.snapshot.remote()
        token = uuid.uuid4().hex[:12]
        targets = [(g, rid, actor) for g, name in enumerate(self.group_names)
                   for rid, actor in by_group.get(name, {}).items()]
        results = await asyncio.gather(*(self._change_one(actor, token, op, assignments[g]) for g, _, actor in targets),
                                       return_exceptions=True)
        changed = 0
        for (g, rid, _), result in zip(targets, results):
            if result is True:
                changed += 1
            elif isinstance(result, RayActorError):
                log.warning("replica %s of group %d died during a re-placement; Serve replaces it", rid, g)
            elif strict:
                raise result if isinstance(result, BaseException) else RuntimeError(f"replica {rid}: {result}")
            else:
                log.warning("replica %s of group %d: %s failed: %s", rid, g, op, result)
        return changed

    async def _change_one(self, actor, token: str, op: str, assignment: dict[int, list[int]]):
        deadline = time.monotonic() + self.timeout_s
        await actor.__ray_call__.remote(change_experts, token, op, assignment)
        while True:
            status = await actor.__ray_call__.remote(change_status, token)
            if status == "ok":
                return True
            if status is not None:
                return status
            if time.monotonic() > deadline:
                return f"{op} not done within {self.timeout_s:.0f}s"
            await asyncio.sleep(POLL_S)


class _Outcome:
    """How one switch ends, decided once: the engine thread switches the tables, or the wait for it gives up,
    whichever comes first. A switch whose wait timed out never lands later, and one that landed is never
    reverted in the registry while the router's tables use it."""

    def __init__(self):
        self._lock = threading.Lock()
        self.state: str | None = None

    def decide(self, state: str, action=None) -> str:
        """Set `state` (running `action` first, under the lock) unless one is set already; the state that holds.
        An action that raises decides nothing."""
        with self._lock:
            if self.state is None:
                if action is not None:
                    action()
                self.state = state
            return self.state
