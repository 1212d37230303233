"""The plan search: every deployment that meets a target, cheapest first.

Searched, for Switchyard's layout (`groups`): number of groups, experts per group (= experts / groups),
devices per group replica (the fewest that hold the group's experts), replicas per group, router replicas,
batch per router, micro-batches, transport. For the plain expert-parallel layout: devices in the EP group
(whole nodes), batch per device, micro-batches, copies of the EP group. A plan meets the target when its
throughput >= tokens/s, its decode step (every token's inter-token latency at steady state) <= the ITL
target, and one prompt's prefill plus a step <= the TTFT target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from switchyard.cluster.planning.hardware import HardwareProfile
from switchyard.cluster.planning.model_shape import ModelShape
from switchyard.cluster.planning.performance import (Deployment, StepBreakdown, cost_per_million, decode_step,
                                                     gpus_per_group_replica, memory_fits, prefill_s)
from switchyard.cluster.planning.routing import GroupRouting

RoutingFn = Callable[[int, str], GroupRouting]  # (groups, placement) -> fan-out and imbalance


@dataclass(frozen=True)
class Target:
    tokens_per_s: float
    itl_p95_s: float
    ttft_s: float
    context_tokens: int = 2048  # mean KV length while decoding
    prompt_tokens: int = 1024

    def __post_init__(self) -> None:
        if min(self.tokens_per_s, self.itl_p95_s, self.ttft_s) <= 0:
            raise ValueError(f"a target must be positive: {self}")


@dataclass(frozen=True)
class Plan:
    deployment: Deployment
    copies: int  # independent copies of the deployment serving the load
    placement: str
    routing_source: str
    step: StepBreakdown
    ttft_s: float
    tokens_per_s: float
    devices: int
    nodes: int
    dollars_per_hour: float
    dollars_per_million: float

    @property
    def itl_s(self) -> float:
        return self.step.step_s

    def meets(self, target: Target) -> bool:
        return (self.tokens_per_s >= target.tokens_per_s and self.itl_s <= target.itl_p95_s
                and self.ttft_s <= target.ttft_s)

    def describe(self) -> str:
        d = self.deployment
        if d.layout == "groups":
            return (f"{d.num_groups} groups x {d.group_replicas} replicas x {d.gpus_per_group_replica} GPU, "
                    f"{d.routers} routers, batch {d.batch_per_router}, mb {d.micro_batches}, {d.transport}, "
                    f"{self.placement}")
        return (f"EP{d.routers} x {self.copies}, batch {d.batch_per_router}/GPU, mb {d.micro_batches}, "
                f"{d.transport}, {self.placement}")

    def to_json(self) -> dict:
        return {"layout": self.deployment.layout, "describe": self.describe(), "copies": self.copies,
                "placement": self.placement, "routing_source": self.routing_source,
                "deployment": self.deployment.__dict__, "step": self.step.to_json(), "ttft_s": self.ttft_s,
                "itl_s": self.itl_s, "tokens_per_s": self.tokens_per_s, "devices": self.devices, "nodes": self.nodes,
                "dollars_per_hour": self.dollars_per_hour, "dollars_per_million_tokens": self.dollars_per_million}


def make_plan(m: ModelShape, hw: HardwareProfile, d: Deployment, copies: int, placement: str, source: str,
              prompt_tokens: int) -> Plan:
    step = decode_step(m, hw, d)
    devices = copies * d.devices
    tokens = copies * step.tokens_per_s
    return Plan(d, copies, placement, source, step, prefill_s(m, hw, d, prompt_tokens) + step.step_s, tokens,
                devices, math.ceil(devices / hw.devices_per_node), devices * hw.price_per_hour,
                cost_per_million(tokens, devices, hw.price_per_hour))


def _router_counts(limit: int) -> Iterable[int]:
    n = 1
    while n <= limit:
        yield n
        n = n + 1 if n < 16 else int(math.ceil(n * 1.12))


def group_plans(m: ModelShape, hw: HardwareProfile, target: Target, routing: RoutingFn,
                groups: Iterable[int], batches: Iterable[int], micro_batches: Iterable[int],
                transports: Iterable[str], replicas: Iterable[int], placement: str = "affinity",
                max_routers: int = 2048, coalesce: bool = False, every_size: bool = False) -> list[Plan]:
    """Per configuration, the fewest routers that reach the target's throughput within its ITL and TTFT; with
    `every_size`, every router count within the ITL and TTFT up to that throughput (for the Pareto plot)."""
    out = []
    for g in groups:
        if m.num_experts % g:
            continue
        r = routing(g, placement)
        per_replica = gpus_per_group_replica(m, hw, g)
        for transport, b, mb, reps in ((t, b, mb, n) for t in transports for b in batches for mb in micro_batches
                                       for n in replicas):
            if mb > b or transport not in hw.transports:
                continue
            base = Deployment("groups", 1, b, target.context_tokens, transport, g, reps, per_replica,
                              micro_batches=mb, fan_out=r.fan_out, imbalance=r.imbalance, coalesce_calls=coalesce)
            if not memory_fits(m, hw, base):
                continue
            for n in _router_counts(max_routers):
                d = replace(base, routers=n)
                if transport == "nvlink" and d.devices > hw.devices_per_node:
                    break
                plan = make_plan(m, hw, d, 1, placement, r.source, target.prompt_tokens)
                if plan.itl_s > target.itl_p95_s or plan.ttft_s > target.ttft_s:
                    break  # more routers only load the groups more
                if every_size:
                    out.append(plan)
                if plan.tokens_per_s >= target.tokens_per_s:
                    if not every_size:
                        out.append(plan)
                    break
    return out


def expert_parallel_plans(m: ModelShape, hw: HardwareProfile, target: Target, routing: RoutingFn,
                          sizes: Iterable[int], batches: Iterable[int], micro_batches: Iterable[int],
                          transport: str = "rdma", redundant_experts: int = 0, every_size: bool = False) -> list[Plan]:
    """Per configuration, the fewest copies of the EP group that reach the target; with `every_size`, every
    number of copies up to it (for the Pareto plot)."""
    out = []
    for n in sizes:
        if n > m.num_experts + redundant_experts:
            continue  # more devices than expert slots: some would hold no expert
        r = routing(n, "eplb") if m.num_experts % n == 0 else GroupRouting(min(m.top_k, n), 1.0, "assumed")
        for b, mb in ((b, mb) for b in batches for mb in micro_batches):
            if mb > b:
                continue
            t = transport if n > hw.devices_per_node or "nvlink" not in hw.transports else "nvlink"
            if t not in hw.transports:
                continue  # e.g. this machine's profile: no GPU-to-GPU all-to-all
            d = Deployment("expert-parallel", n, b, target.context_tokens, t, micro_batches=mb,
                           imbalance=r.imbalance, redundant_experts=redundant_experts)
            if not memory_fits(m, hw, d):
                continue
            one = make_plan(m, hw, d, 1, "eplb", r.source, target.prompt_tokens)
            copies = max(1, math.ceil(target.tokens_per_s / one.tokens_per_s))
            for n_copies in range(1 if every_size else copies, copies + 1):
                plan = make_plan(m, hw, d, n_copies, "eplb", r.source, target.prompt_tokens)
                if plan.itl_s <= target.itl_p95_s and plan.ttft_s <= target.ttft_s and (
                        every_size or plan.tokens_per_s >= target.tokens_per_s):
                    out.append(plan)
    return out


def cheapest(plans: list[Plan], count: int = 5) -> list[Plan]:
    return sorted(plans, key=lambda p: (p.dollars_per_hour, p.devices, p.dollars_per_million, p.itl_s))[:count]


DEFAULT_GROUPS = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_BATCHES = (8, 16, 32, 64, 128, 256)
DEFAULT_MICRO_BATCHES = (1, 2, 4)
DEFAULT_REPLICAS = (1, 2, 4, 8)
DEFAULT_EP_SIZES = (8, 16, 32, 64, 72, 128, 144, 256)
