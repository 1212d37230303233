"""The router's floor for each expert group's autoscaling: the rows per second it expects to send the group.

What the groups compute tells the autoscaler what they do; sequences queued at the router (waiting for a
KV-cache slot) are work the groups have not seen yet. The router expects each group's rows to grow with the
sequences it holds: rows/s sent lately x (running + waiting) / running. It reports that to the registry once
a second; each group replica passes it to the policy (`floor_rows_per_s`), which may raise a group's target
on it, never lower it. Pure except `report`.
"""

from __future__ import annotations

import threading
import time


def expected_rows_per_s(rows_per_s: list[float], running: int, waiting: int) -> list[float]:
    """Per group: the rows/s sent lately, scaled by the sequences the router holds over those it runs."""
    if running == 0:
        return [0.0] * len(rows_per_s)
    return [r * (running + waiting) / running for r in rows_per_s]


class GroupDemand:
    def __init__(self, num_groups: int, clock=time.monotonic):
        self._clock = clock
        self._rows = [0] * num_groups
        self._since = clock()
        self._lock = threading.Lock()  # the engine thread adds, the reporting thread takes

    def on_dispatch(self, tokens_per_group: dict[int, int]) -> None:
        with self._lock:
            for group, rows in tokens_per_group.items():
                self._rows[group] += rows

    def take(self) -> list[float]:
        """Rows/s per group since the last take."""
        with self._lock:
            now = self._clock()
            span = max(now - self._since, 1e-6)
            rates = [r / span for r in self._rows]
            self._rows = [0] * len(rates)
            self._since = now
        return rates


def report_floors(demand: GroupDemand, group_names: list[str], registry, queue_sizes, stop: threading.Event,
                  every_s: float = 1.0) -> None:
    """Thread body: every `every_s`, the expected rows/s of each group to the registry (fire and forget).
    `queue_sizes()` -> (running, waiting) sequences of the router's scheduler."""
    last = None
    while not stop.wait(every_s):
        running, waiting = queue_sizes()
        floors = expected_rows_per_s(demand.take(), running, waiting)
        if floors != last:  # an idle router sends nothing
            registry.report_floor.remote(dict(zip(group_names, floors)))
            last = floors
