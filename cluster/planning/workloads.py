"""Arrival traces for the simulator: request rate over time (steady, bursty, a day's cycle) and the requests.

A workload is a rate function (requests per second at time t) plus each request's prompt and output lengths.
Arrivals per interval are Poisson with the interval's mean rate (seeded), so a run is reproducible. A closed
workload has no rate: `concurrency` clients each send their next request when the last one finishes (as a load
tool's streams do); they all start at once, and the simulator sends each next request (simulator.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Workload:
    kind: str  # steady | bursty | day | closed
    peak_requests_per_s: float
    duration_s: float
    prompt_tokens: int = 1024
    output_tokens: int = 256
    trough_fraction: float = 0.25  # day: the night's rate over the peak
    burst_start_s: float = 0.0  # bursty: when the burst begins, and how long it lasts
    burst_s: float = 0.0
    base_fraction: float = 0.2  # bursty: the rate outside the burst over the peak
    concurrency: int = 0  # closed: clients, each with one request in flight

    def __post_init__(self) -> None:
        if self.kind not in ("steady", "bursty", "day", "closed"):
            raise ValueError(f"workload kind must be steady, bursty, day or closed, got {self.kind!r}")
        if (self.kind == "closed") != (self.concurrency >= 1):
            raise ValueError(f"a closed workload, and only one, needs concurrency >= 1: {self}")
        if self.peak_requests_per_s <= 0 or self.duration_s <= 0 or self.output_tokens < 1:
            raise ValueError(f"a workload needs a positive rate, duration and output length: {self}")

    def rate(self, t: float) -> float:
        """Requests per second at time t."""
        if self.kind == "steady":
            return self.peak_requests_per_s
        if self.kind == "bursty":
            inside = self.burst_start_s <= t < self.burst_start_s + self.burst_s
            return self.peak_requests_per_s * (1.0 if inside else self.base_fraction)
        # day: a cosine from the trough at t=0 (night) to the peak at half the period (afternoon)
        low = self.trough_fraction
        phase = 0.5 - 0.5 * math.cos(2.0 * math.pi * t / self.duration_s)
        return self.peak_requests_per_s * (low + (1.0 - low) * phase)

    @property
    def peak_tokens_per_s(self) -> float:
        return self.peak_requests_per_s * self.output_tokens


def arrivals(workload: Workload, tick_s: float, seed: int = 0) -> np.ndarray:
    """Requests arriving in each tick: [ceil(duration / tick)] int64 (closed: every client's first, at 0)."""
    rng = np.random.default_rng(seed)
    ticks = int(math.ceil(workload.duration_s / tick_s))
    if workload.kind == "closed":
        return np.array([workload.concurrency] + [0] * (ticks - 1), dtype=np.int64)
    means = np.array([workload.rate((i + 0.5) * tick_s) * tick_s for i in range(ticks)])
    return rng.poisson(means)
