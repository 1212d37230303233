"""The router's floor for each expert group's autoscaling: the rows per second it expects to send the group.

What the groups compute tells the autoscaler what they do; sequences queued at the router (waiting for a
KV-cache slot) are work the groups have not seen yet. The router expects each group's rows to grow with the
sequences it holds: rows/s sent lately x (running + waiting) / running. It reports that to the registry once
a second; each group replica passes it to the policy (`floor_rows_per_s`), which may raise a group's target
on it, never lower it. With the forecast on, the floor also looks ahead (`FloorTrend`): a replica asked for
now serves only after Serve's upscale delay and its start, so the floor carries the rows/s its trend points to
that far ahead. Pure except `report_floors`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

import numpy as np

from switchyard.cluster.autoscaling.forecast import looked_ahead, trend_window_s


def expected_rows_per_s(rows_per_s: list[float], running: int, waiting: int) -> list[float]:
    """Per group: the rows/s sent lately, scaled by the sequences the router holds over those it runs."""
    if running == 0:
        return [0.0] * len(rows_per_s)
    return [r * (running + waiting) / running for r in rows_per_s]


class FloorTrend:
    """Each group's recent floor (rows/s: the larger of the queue's floor and the forecast), and where its trend
    points `horizons_s[g]` ahead (looked_ahead); a group's horizon is its pool's upscale delay plus a replica's
    start plus the lead wanted (`ExpertAutoscaling.forecast_horizon_s`; 0: no look-ahead). The trend of the
    floor, not of the forecast alone: the forecast may sit below the load it forecasts (it is a guess per
    request), and a line through it would then rise from too low a level to ask for the replica in time."""

    def __init__(self, horizons_s: list[float]):
        self.horizons_s = [float(h) for h in horizons_s]
        self.windows_s = [trend_window_s(h) for h in self.horizons_s]
        self._times: deque = deque()
        self._values: deque = deque()  # [G] floors at each time

    def ahead(self, now: float, floors) -> list[float]:
        """Record `floors` [G] at `now` (seconds, increasing); each group's rows/s looked ahead."""
        self._times.append(float(now))
        self._values.append(np.asarray(floors, np.float64))
        while self._times[0] < now - max(self.windows_s):
            self._times.popleft()
            self._values.popleft()
        times, values = np.asarray(self._times), np.stack(self._values)
        return [looked_ahead(times, values[:, g], h, w)
                for g, (h, w) in enumerate(zip(self.horizons_s, self.windows_s))]


class GroupDemand:
    """Rows/s sent to each group, from the dispatcher's running totals (`DispatchStats.tokens_per_group`): read
    once a second by the reporting thread, nothing added on the engine's per-layer path."""

    def __init__(self, totals: Callable[[], list[int]], clock=time.monotonic):
        self._totals, self._clock = totals, clock
        self._last = list(totals())
        self._since = clock()

    def take(self) -> list[float]:
        """Rows/s per group since the last take."""
        now, current = self._clock(), list(self._totals())  # a copy of ints: safe while the engine adds
        span = max(now - self._since, 1e-6)
        rates = [(c - last) / span for c, last in zip(current, self._last)]
        self._last, self._since = current, now
        return rates


def report_floors(demand: GroupDemand, group_names: list[str], registry, queue_sizes, stop: threading.Event,
                  every_s: float = 1.0, forecast: Callable[[list[float]], list[float]] | None = None,
                  trend: FloorTrend | None = None, clock=time.monotonic) -> None:
    """Thread body: every `every_s`, the expected rows/s of each group to the registry (fire and forget).
    `queue_sizes()` -> (running, waiting) sequences of the router's scheduler; `forecast(rows/s measured)` ->
    the groups' forecast rows/s (forecast_live.py), which raises a floor where it is higher; `trend` looks the
    floors ahead (none: the floors now)."""
    last = None
    while not stop.wait(every_s):
        running, waiting = queue_sizes()
        measured = demand.take()
        floors = expected_rows_per_s(measured, running, waiting)
        if forecast is not None:
            floors = [max(a, float(b)) for a, b in zip(floors, forecast(measured))]
        if trend is not None:
            floors = trend.ahead(clock(), floors)
        if floors != last:  # an idle router sends nothing
            registry.report_floor.remote(dict(zip(group_names, floors)))
            last = floors
