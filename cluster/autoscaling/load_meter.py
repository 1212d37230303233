"""What an expert-group replica really does, for the autoscaler: rows computed, busy share, calls in flight.

Serve's own autoscaling signal is the count of requests in flight through deployment handles; the router's
per-layer calls (a compiled graph, or `__ray_call__` on the replica's actor) never pass there, so each
replica measures itself and reports through `record_autoscaling_stats`. No Ray here.

    rows_per_s   token rows computed per second since the last sample (a row = one token of one layer)
    busy         share of wall time since the last sample spent computing (0..1; 1 = never idle)
    in_flight    calls started and not yet finished at the moment of the sample
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager


class LoadMeter:
    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()  # compiled-graph calls and the stats sampler run on different threads
        self._rows = 0
        self._busy_s = 0.0
        self._in_flight = 0
        self._busy_since: float | None = None  # start of the current busy stretch (any call in flight)
        self._last_call = clock()
        self._sample_at = clock()
        self._sample_rows = 0
        self._sample_busy_s = 0.0

    @contextmanager
    def call(self, rows: int):
        """Wrap one call that computes `rows` token rows. Overlapping calls count their union as busy."""
        with self._lock:
            now = self._clock()
            if self._in_flight == 0:
                self._busy_since = now
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                now = self._clock()
                self._in_flight -= 1
                self._rows += rows
                self._last_call = now
                if self._in_flight == 0 and self._busy_since is not None:
                    self._busy_s += now - self._busy_since
                    self._busy_since = None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def idle_for(self) -> float:
        """Seconds since the last call finished (0 while one runs)."""
        with self._lock:
            return 0.0 if self._in_flight else self._clock() - self._last_call

    def sample(self) -> dict[str, float]:
        """Rates since the previous sample (what `record_autoscaling_stats` returns)."""
        with self._lock:
            now = self._clock()
            busy_s = self._busy_s + (now - self._busy_since if self._busy_since is not None else 0.0)
            span = max(now - self._sample_at, 1e-6)
            out = {"rows_per_s": (self._rows - self._sample_rows) / span,
                   "busy": min(1.0, (busy_s - self._sample_busy_s) / span),
                   "in_flight": float(self._in_flight)}
            self._sample_at, self._sample_rows, self._sample_busy_s = now, self._rows, busy_s
            return out
