"""A simulator of serving: requests arrive from a workload, routers decode in steps, expert groups take every
layer's calls, and Switchyard's real autoscaling policy sizes every pool as Serve would run it.

Events in time order: arrivals (per tick, Poisson), admissions to free batch slots (time to first token =
queueing + the prompt's prefill), decode progress (a tick of steps whose length the performance model gives
for the current batch, routers and per-group replicas: a group with fewer replicas serves more calls each),
the autoscaler's period, and replicas becoming ready `replica_start_s` after they were asked for.

The autoscaler is `switchyard.cluster.autoscaling_policy.ExpertGroupPolicy`, called with a real
`ray.serve.config.AutoscalingContext` carrying the metrics a replica reports (`busy`, `rows_per_s`), followed by
Serve's own `_apply_scaling_factors` and `_apply_delay_logic` (upscale/downscale delays, evaluated at the
simulated clock) and the pool's bounds: the function Serve's controller calls, with Serve's delays
(serve_step.py). The router pool uses the same policy on its batch slots (busy = sequences held / batch size).

Sequences are simulated as cohorts (requests admitted together, with the same remaining tokens), so a day of
traffic at DeepSeek scale runs in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from switchyard.cluster.autoscaling.demand import FloorTrend
from switchyard.cluster.autoscaling.policy import ExpertGroupPolicy
from switchyard.cluster.planning.hardware import HardwareProfile
from switchyard.cluster.planning.model_shape import ModelShape
from switchyard.cluster.planning.performance import Deployment, decode_step, prefill_s
from switchyard.cluster.planning.simulated_pools import Pool, autoscale_pools, group_shares
from switchyard.cluster.planning.workloads import Workload, arrivals


@dataclass(frozen=True)
class ScalingSettings:
    autoscale: bool = True
    tick_s: float = 1.0
    policy_period_s: float = 1.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    replica_start_s: float = 60.0
    target_utilization: float = 0.6
    hysteresis: float = 0.2
    min_replicas: int = 1
    # what a group replica reports as `busy`: its busy share (what Switchyard's replicas report today), or its
    # rows/s over a replica's rows/s at the peak plan ("rows": a signal that a memory-bound pass cannot hide)
    group_signal: str = "busy"
    # forecast-led scaling (shift.py): each group's floor is the rows/s its running and waiting requests will
    # send, (1 - forecast_error) x the truth (an under-forecast, the side that delays a replica); None: reactive
    forecast_error: float | None = None
    forecast_from_s: float = 0.0  # the floor is reported from then on (before, both setups run alike)
    # how far ahead the floor's trend is looked (demand.FloorTrend); None: the upscale delay plus a replica's
    # start, as the live router looks; 0: the floor now
    forecast_horizon_s: float | None = None
    # the routers prefill in line with their decodes (a CPU engine's chunked prefill: this machine): admitting a
    # request holds its router for the prompt's prefill. False: prefill runs elsewhere and costs the decode
    # steps nothing, as with disaggregated prefill (the GPU plans)
    prefill_on_router: bool = False

    def __post_init__(self) -> None:
        if self.group_signal not in ("busy", "rows"):
            raise ValueError(f"group_signal must be busy or rows, got {self.group_signal!r}")


@dataclass(frozen=True)
class SimResult:
    device_hours: float
    dollars: float
    tokens: float
    dollars_per_million: float
    itl_p50_s: float
    itl_p95_s: float
    ttft_p50_s: float
    ttft_p95_s: float
    # replica-hours (a router replica is gpus_per_router GPUs, a group replica gpus_per_group_replica), starting
    # replicas included: they are paid for while they load
    router_replica_hours: float
    group_replica_hours: float
    timeline: list  # (t, routers, [group replicas], queued requests) per tick
    # per tick: (t, [ready replicas per group], [replicas' worth of work per group], [(step s, tokens)])
    trace: list = field(default_factory=list)
    finished_tokens: float = 0.0  # output tokens of the requests that finished within the duration
    # inter-token latency as aiperf defines it, (last token - first token) / (tokens - 1) of a request, on
    # average: decode time and in-line prefill while sequences decode (prefill_on_router), over decode steps
    itl_mean_s: float = math.nan

    @property
    def replica_hours(self) -> float:
        return self.router_replica_hours + self.group_replica_hours

    def summary(self) -> dict:
        """The figures without the timeline, and the fewest and most replicas each pool had."""
        routers = [r for _, r, _, _ in self.timeline] or [0]
        groups = [n for _, _, g, _ in self.timeline for n in g] or [0]
        figures = {k: v for k, v in self.__dict__.items() if k not in ("timeline", "trace")}
        return {**figures, "replica_hours": self.replica_hours,
                "routers_range": [min(routers), max(routers)], "group_replicas_range": [min(groups), max(groups)]}


def weighted_quantile(values: list[float], weights: list[float], q: float) -> float:
    if not values:
        return math.nan
    order = np.argsort(values)
    v, w = np.asarray(values)[order], np.asarray(weights, dtype=np.float64)[order]
    cum = np.cumsum(w)
    return float(v[min(len(v) - 1, np.searchsorted(cum, q * cum[-1]))])


def simulate(m: ModelShape, hw: HardwareProfile, peak: Deployment, workload: Workload, settings: ScalingSettings,
             seed: int = 0, mix=None) -> SimResult:
    """Serve `workload` with `peak`'s pools (its counts are the fixed-at-peak sizes and the autoscaler's maxima).
    `mix(t)`: the groups' shares of the requests arriving at t (default: the plan's imbalance, every time); a
    request keeps its arrival's mix while it decodes, so a shift of traffic reaches the groups as requests turn
    over, as it does live."""
    if peak.layout != "groups":
        raise ValueError("the simulator runs Switchyard's groups layout")
    G, B = peak.num_groups, peak.batch_per_router
    shares = group_shares(G, peak.imbalance)
    mixes: dict[float, np.ndarray] = {}

    def mix_of(arrived: float) -> np.ndarray:
        if arrived not in mixes:
            mixes[arrived] = shares if mix is None else np.asarray(mix(arrived), np.float64)
        return mixes[arrived]

    def mixed(cohorts) -> np.ndarray:  # the groups' shares of these cohorts' tokens
        total = sum(c[0] for c in cohorts)
        return sum(c[0] * mix_of(c[-1]) for c in cohorts) / total if total else shares
    start = 1 if settings.autoscale else None

    def new_pool(name, group, groups, devices, maximum):
        policy = ExpertGroupPolicy(group, groups, settings.target_utilization, settings.hysteresis,
                                   settings.min_replicas, maximum)
        return Pool(name, policy, devices, maximum, start or maximum)

    routers = new_pool("router", 0, 1, peak.gpus_per_router, peak.routers)
    groups = [new_pool(f"experts-{g}", g, G, peak.gpus_per_group_replica, peak.group_replicas) for g in range(G)]

    @lru_cache(maxsize=100_000)
    def step_s(n: int, batch: int, replicas: tuple[int, ...], now: tuple[float, ...]) -> float:
        return max(decode_step(m, hw, replace(peak, routers=n, batch_per_router=batch, group_replicas=r,
                                               imbalance=max(1.0, s * G))).step_s
                   for s, r in set(zip(now, replicas)))

    @lru_cache(maxsize=1024)
    def prefill_work_s(prompts: int) -> float:  # a router's prefill of `prompts` admitted together
        return prefill_s(m, hw, peak, workload.prompt_tokens * prompts)

    prefill = prefill_work_s(1)  # one prompt's: what a request's time to first token adds

    prefilling = 0.0  # seconds of prefill the routers still owe (prefill_on_router)
    finished_tokens = decoding_s = stalled_s = decode_steps = 0.0
    incoming = arrivals(workload, settings.tick_s, seed)
    queue: list[list[float]] = []  # [count, arrival time]
    active: list[list[float]] = []  # [count, tokens left, arrival time]
    itl, itl_w, ttft, ttft_w, timeline, trace = [], [], [], [], [], []
    router_s = group_s = tokens = 0.0  # replica-seconds
    next_policy, last_step = 0.0, 0.0
    horizon = settings.forecast_horizon_s
    trend = FloorTrend([settings.upscale_delay_s + settings.replica_start_s if horizon is None else horizon] * G)
    for i, arriving in enumerate(incoming):
        t = i * settings.tick_s
        for pool in [routers, *groups]:
            pool.ready += sum(1 for r in pool.starting if r <= t)
            pool.starting = [r for r in pool.starting if r > t]
        if arriving:
            queue.append([float(arriving), t])
        made, step, elapsed, occupied, made_g, steps_made = 0.0, 0.0, 0.0, 0.0, np.zeros(G), []
        while elapsed < settings.tick_s - 1e-9:  # segments end where a cohort finishes and frees its slots
            now = t + elapsed
            admitted = _admit(queue, active, routers.ready * B, now, prefill, ttft, ttft_w, workload.output_tokens)
            if settings.prefill_on_router and admitted:
                prefilling += prefill_work_s(math.ceil(admitted / routers.ready))
            if prefilling > 1e-12:  # the routers prefill: no decode step meanwhile
                pause = min(prefilling, settings.tick_s - elapsed)
                prefilling -= pause
                elapsed += pause
                stalled_s += pause if active else 0.0  # decoding sequences wait for it
                continue
            seqs = sum(c[0] for c in active)
            if not seqs:
                break
            batch = max(1, math.ceil(seqs / routers.ready))
            now_mix = mixed(active)
            step = step_s(routers.ready, batch, tuple(p.ready for p in groups), tuple(np.round(now_mix, 6)))
            span = min(settings.tick_s - elapsed, min(c[1] for c in active) * step)
            steps = span / step
            decoding_s, decode_steps = decoding_s + span, decode_steps + steps
            produced = 0.0
            for cohort in active:
                cohort[1] -= steps
                produced += steps * cohort[0]
            finished = sum(c[0] for c in active if c[1] <= 1e-9)
            finished_tokens += finished * workload.output_tokens
            if finished and workload.kind == "closed":  # each finished request's client sends its next one now
                queue.append([finished, now + span])
            active = [c for c in active if c[1] > 1e-9]
            made_g += produced * now_mix
            itl.append(step)
            itl_w.append(produced)
            steps_made.append((step, produced))
            made += produced
            elapsed += span
            occupied += seqs * span
        tokens += made
        # the load a replica reports is averaged over time (its busy share over Serve's look-back window), not
        # read at the tick's end: at low load every sequence may finish within a tick and leave none held then
        seqs = occupied / settings.tick_s
        router_s += settings.tick_s * routers.target
        group_s += settings.tick_s * sum(p.target for p in groups)
        last_step = step or last_step
        floors = None
        if settings.forecast_error is not None and last_step and t >= settings.forecast_from_s:
            # as the live router: every running and waiting request's mix, a token a step (the last step's time)
            known = [c[::2] for c in active] + queue  # [count, arrival]
            forecast = ((1 - settings.forecast_error) * m.top_k / last_step * sum(c * mix_of(a) for c, a in known)
                        if known else np.zeros(G))
            # the live router's floor (demand.report_floors): the larger of the load sent and the forecast, looked
            # ahead along its trend (no queue factor: the reactive setup has none to compare with)
            floors = trend.ahead(t, np.maximum(made_g * m.top_k / settings.tick_s, forecast))
        work = [0.0] * G
        if settings.autoscale and t >= next_policy:
            next_policy = t + settings.policy_period_s
            now_shares = made_g / made if made else mixed(active)
            work = autoscale_pools(m, hw, peak, routers, groups, now_shares, seqs + sum(c for c, _ in queue), made,
                              step, t, settings, floors)
        timeline.append((t, routers.target, [p.target for p in groups], sum(c for c, _ in queue)))
        trace.append((t, [p.ready for p in groups], work, steps_made))
    hours = (router_s * routers.devices_per_replica + group_s * groups[0].devices_per_replica) / 3600.0
    dollars = hours * hw.price_per_hour
    return SimResult(hours, dollars, tokens, dollars / tokens * 1e6 if tokens else math.inf,
                     weighted_quantile(itl, itl_w, 0.5), weighted_quantile(itl, itl_w, 0.95),
                     weighted_quantile(ttft, ttft_w, 0.5), weighted_quantile(ttft, ttft_w, 0.95),
                     router_s / 3600.0, group_s / 3600.0, timeline, trace, finished_tokens,
                     (decoding_s + stalled_s) / decode_steps if decode_steps else math.nan)


def _admit(queue: list, active: list, slots: int, now: float, prefill: float, ttft: list, ttft_w: list,
           output_tokens: int) -> float:
    """Queued requests into free batch slots, first come first served; each one's time to first token. Returns
    how many were admitted."""
    free = slots - sum(c[0] for c in active)
    admitted = 0.0
    while queue and free >= 1:
        take = min(queue[0][0], math.floor(free))
        ttft.append(now - queue[0][1] + prefill)
        ttft_w.append(take)
        active.append([take, float(output_tokens), queue[0][1]])
        queue[0][0] -= take
        free -= take
        admitted += take
        if queue[0][0] < 1:
            queue.pop(0)
    return admitted
