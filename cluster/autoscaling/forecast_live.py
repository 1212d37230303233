"""The router's live group-load forecast: once a second, every running and waiting request's share of each
group's decode load (forecast.py), summed, and how far the last forecast was from what the groups then got.

No Ray: `tick` takes the scheduler's sequences and the rows/s measured since the last tick (demand.GroupDemand),
and returns the forecast that the floor reports carry (demand.report_floors). Its `snapshot` is what
`/v1/switchyard/stats` and `/metrics` show.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable

import numpy as np

from switchyard.cluster.autoscaling.forecast import (
    blended_picks,
    forecast_rows_per_s,
    propagated_picks,
    relative_error,
    rows_per_token,
)
from switchyard.router.prompt_forecast import prompt_picks
from switchyard.router.request_routing import RequestRouting


class LiveForecast:
    def __init__(self, routing: RequestRouting, model, holds: Callable[[], np.ndarray], prior_tokens: float = 8.0,
                 error_window: int = 30):
        """`holds()` -> the current placement's [L, G, E] (it changes with re-placement); `model` the router's
        DenseModel (its embeddings and first gate guess a waiting prompt's experts)."""
        self.routing, self.model, self.holds, self.prior_tokens = routing, model, holds, prior_tokens
        self._prompt_picks: dict[int, np.ndarray] = {}  # sequence number -> [E], computed once per request
        self._pairs: deque = deque(maxlen=error_window)  # (forecast [G], measured [G]) of recent ticks
        self._previous: np.ndarray | None = None
        self._lock = threading.Lock()  # tick (reporting thread) against snapshot (HTTP thread)
        self.forecast = np.zeros(holds().shape[1])
        self.measured = np.zeros_like(self.forecast)

    def tick(self, running: list, waiting: list, tokens_per_s_per_seq: float, measured: list[float]) -> np.ndarray:
        """running, waiting: the scheduler's Sequences (copies of its lists); measured: rows/s each group got
        since the last tick. Returns the forecast rows/s per group [G]."""
        self.routing.drain()
        live = {s.number for s in running} | {s.number for s in waiting}
        self.routing.forget_except(live)
        self._prompt_picks = {n: p for n, p in self._prompt_picks.items() if n in live}
        holds, k = self.holds(), self.routing.top_k
        popularity = self.routing.popularity()
        counts, tokens = self.routing.request_counts([s.number for s in running])
        seen = tokens > 0  # a running sequence still in its first prefill chunk has no routing yet
        unseen = [s for s, ok in zip(running, seen) if not ok] + list(waiting)
        per_token = [rows_per_token(blended_picks(counts[seen], tokens[seen], popularity, self.prior_tokens),
                                    holds, k)]
        if unseen:
            first = self._first_layer_picks(unseen)  # [R, E]
            picks = propagated_picks(first, self.routing.transition(), k)  # [R, L, E]
            per_token.append(rows_per_token(0.5 * (picks + popularity[None]), holds, k))  # a guess: half prior
        forecast = forecast_rows_per_s(np.concatenate(per_token), tokens_per_s_per_seq)
        with self._lock:
            if self._previous is not None:
                self._pairs.append((self._previous, np.asarray(measured, np.float64)))
            self._previous, self.forecast, self.measured = forecast, forecast, np.asarray(measured, np.float64)
        return forecast

    def _first_layer_picks(self, seqs: list) -> np.ndarray:
        todo = [s for s in seqs if s.number not in self._prompt_picks]
        if todo:
            for seq, picks in zip(todo, prompt_picks(self.model, [s.prompt_ids for s in todo]).numpy()):
                self._prompt_picks[seq.number] = picks
        return np.stack([self._prompt_picks[s.number] for s in seqs]).astype(np.float64)

    def snapshot(self) -> dict:
        """Per group: forecast and measured rows/s now, and the recent error: the rows forecast over the last
        ticks (each tick's forecast for the second after it) against the rows the group got in those seconds,
        |sum f - sum m| / sum m, per group and over all groups (sum_g |...| / sum_g sum m). Summed over the
        window, not per tick: a step can take longer than a tick, so one second's rows are bursty."""
        with self._lock:
            pairs, forecast, measured = list(self._pairs), self.forecast.copy(), self.measured.copy()
        per_group = [None] * len(forecast)
        overall = None
        if pairs:
            f = np.stack([p[0] for p in pairs]).sum(0)  # [G] rows/s summed over the window's ticks
            m = np.stack([p[1] for p in pairs]).sum(0)  # [G]
            per_group = [relative_error(f[g:g + 1], m[g:g + 1]) for g in range(len(f))]
            overall = relative_error(f, m)
        return {"forecast_rows_per_s": forecast.tolist(), "measured_rows_per_s": measured.tolist(),
                "error": per_group, "error_all_groups": overall, "ticks": len(pairs)}


def tokens_per_s_per_seq(step_seconds: list[float]) -> float:
    """Tokens a running sequence decodes per second: one a step, at the median of recent steps' duration (the
    rate while there is work; idle time between steps is not the groups' to plan for). 0 with no step yet."""
    return 1.0 / float(np.median(step_seconds)) if step_seconds else 0.0


def holds_of_tables(tables) -> np.ndarray:
    """The router's dispatch tables (`DispatchTables`: groups holding each expert) -> holds [L, G, E] bool."""
    groups = tables.replica_groups.numpy()  # [L, E, R], -1 padded
    holds = np.zeros((groups.shape[0], tables.num_groups, groups.shape[1]), bool)
    l, e, r = np.nonzero(groups >= 0)
    holds[l, groups[l, e, r], e] = True
    return holds


def snapshot_list(items, tries: int = 5) -> list:
    """A copy of a list or deque that the engine thread may change meanwhile (a deque raises if it does)."""
    for _ in range(tries - 1):
        try:
            return list(items)
        except RuntimeError:
            continue
    return list(items)
