"""Which registered expert-group replicas are dead: one cheap ping each, in parallel.

A replica that Serve stops leaves the registry itself; one that is killed (SIGKILL, OOM, a lost node) never
does. Ray answers a call to a dead actor with `RayActorError` at once (the raylet sees its worker exit), so a
ping tells a dead replica from a live one in a few milliseconds. A replica that does not answer within the
timeout is busy, not dead (loading experts, or a node under load), and is kept: taking a live replica out for
good costs more than one more failed try on a dead one, which the transports retry anyway.
"""

from __future__ import annotations

from typing import Hashable

import ray
from ray.exceptions import RayActorError

PING_TIMEOUT_S = 2.0


def _alive(_actor) -> bool:
    return True


def dead_among(actors: dict[Hashable, object], timeout_s: float = PING_TIMEOUT_S) -> list[Hashable]:
    """The keys of `actors` (key -> actor handle) whose actor is dead."""
    if not actors:
        return []
    keys = list(actors)
    pings = {actors[key].__ray_call__.remote(_alive): key for key in keys}
    ready, _ = ray.wait(list(pings), num_returns=len(pings), timeout=timeout_s)
    dead = []
    for ref in ready:
        try:
            ray.get(ref)
        except RayActorError:
            dead.append(pings[ref])
        except Exception:  # the ping itself failed in a live actor: alive
            pass
    return dead
