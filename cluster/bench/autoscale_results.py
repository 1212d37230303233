"""What `switchyard bench autoscale` measures in a phase, and its tables: per phase and per setup, replicas,
tok/s, p95 ITL, replica-hours and dollars per million output tokens at the given (router, expert) prices."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


GOLDEN = 0.6180339887498949  # spreads the requests that have shifted evenly over a ramp


@dataclass(frozen=True)
class Phase:
    name: str
    prompts: list[str]
    seconds: float
    concurrency: int
    ramp_from: tuple[str, ...] = ()  # a gradual shift: prompts the phase moves away from, over ramp_s
    ramp_s: float = 0.0

    def prompt(self, i: int, elapsed_s: float) -> str:
        """The i-th request's prompt, started elapsed_s into the phase. Over a ramp, the share of requests that
        take the phase's own prompts rises linearly from 0 to 1 (request i shifts once that share passes
        frac(i x golden ratio), so the shifted requests are spread evenly); after it, or without one, all do."""
        own = self.prompts[i % len(self.prompts)]
        if not self.ramp_from or elapsed_s >= self.ramp_s:
            return own
        return own if (i * GOLDEN) % 1.0 < elapsed_s / self.ramp_s else self.ramp_from[i % len(self.ramp_from)]


@dataclass
class PhaseResult:
    setup: str
    phase: str
    seconds: float
    replicas: list[list[int]] = field(default_factory=list)  # per sample: [group replicas]
    tokens: int = 0
    itl: list[float] = field(default_factory=list)  # per request, seconds
    errors: int = 0
    scale_up_s: dict[int, float] = field(default_factory=dict)  # group -> seconds after phase start
    samples: list = field(default_factory=list)  # shift.Sample every half second
    itl_at: list[tuple[float, float]] = field(default_factory=list)  # (finished, s after phase start; ITL)

    def replica_hours(self, router_replicas: int) -> float:
        mean = float(np.mean([router_replicas + sum(r) for r in self.replicas])) if self.replicas else 0.0
        return mean * self.seconds / 3600.0


def p95(values: list[float]) -> float | None:
    return float(np.percentile(values, 95)) if values else None


def phase_rows(results: list[PhaseResult], prices: tuple[float, float]) -> list[list]:
    rows = []
    for r in results:
        replicas = np.array(r.replicas) if r.replicas else np.zeros((1, 2))
        hours = r.replica_hours(1)
        router_h = r.seconds / 3600.0
        dollars = router_h * prices[0] + (hours - router_h) * prices[1]
        per_million = dollars / r.tokens * 1e6 if r.tokens and min(prices) > 0 else None
        ups = ", ".join(f"g{g} {s:.1f}s" for g, s in sorted(r.scale_up_s.items())) or "-"
        rows.append([r.setup, r.phase, " / ".join(f"{m:.1f} (max {x})" for m, x in
                                                    zip(replicas.mean(0), replicas.max(0))),
                     r.tokens / r.seconds, _ms(p95(r.itl)), hours, _dollars(per_million, r.tokens, prices),
                     ups, r.errors])
    return rows


def total_rows(results: list[PhaseResult], prices: tuple[float, float]) -> list[list]:
    rows = []
    for setup in dict.fromkeys(r.setup for r in results):
        mine = [r for r in results if r.setup == setup]
        hours = sum(r.replica_hours(1) for r in mine)
        seconds = sum(r.seconds for r in mine)
        dollars = seconds / 3600.0 * prices[0] + (hours - seconds / 3600.0) * prices[1]
        tokens = sum(r.tokens for r in mine)
        itl = [x for r in mine for x in r.itl]
        per_million = dollars / tokens * 1e6 if tokens and min(prices) > 0 else None
        rows.append([setup, tokens / seconds, _ms(p95(itl)), hours, _dollars(per_million, tokens, prices),
                     sum(r.errors for r in mine)])
    return rows


def _dollars(per_million: float | None, tokens: int, prices: tuple[float, float]):
    if min(prices) <= 0:
        return "not priced"
    return "no tokens" if not tokens else per_million


def _ms(seconds: float | None):
    return None if seconds is None else 1000 * seconds


PHASE_HEADERS = ["setup", "phase", "replicas g0 / g1 (mean, max)", "output tok/s", "p95 ITL ms", "replica-hours",
                 "$/1M tokens", "scale-up after", "errors"]
TOTAL_HEADERS = ["setup", "output tok/s", "p95 ITL ms", "replica-hours", "$/1M tokens", "errors"]
