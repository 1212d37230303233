"""Hot and cold pools: which expert groups of a plan a cheaper node type can serve without slowing the step.

Each group does its share of a layer's (token, expert) pairs on its own pool's hardware: its pass is the
roofline of `performance.group_pass_s` there (its pairs' FLOPs on that GPU's compute, or the distinct experts
they hit read from that GPU's memory, split over the replica's GPUs), and its replicas share the routers' calls.
A layer's step waits for its slowest group, so a split is kept only when the step, layer by layer with every
group on its own hardware, is no longer than with every group on the primary hardware: the hot groups set the
pace and a cold group, slower per pair, must finish its smaller share within it. Throughput and ITL are then
the plan's. A cold replica's GPUs must also hold its group's experts (every layer's).

Loads are per layer ([layers, groups], `RoutingSource.shares`): group g holds other experts in every layer, and
a group cold on average may be a layer's busiest.

Search, per candidate hardware: the groups sorted by mean load, the k coldest in the cold pool (k = 1..G-1),
one setting for the whole pool (an `expert_pools` entry has one num_gpus and num_replicas): GPUs a replica from
the fewest that hold a group up to a node, replicas 1..the plan's. Routers and hot groups stay as planned. The
primary hardware is a candidate too (a cold pool of fewer replicas), so the saving of cheaper hardware can be
told from the saving of fewer replicas.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from switchyard.cluster.planning.hardware import HardwareProfile
from switchyard.cluster.planning.model_shape import ModelShape
from switchyard.cluster.planning.performance import (Deployment, cost_per_million, gpus_per_group_replica,
                                                     group_pass_s, groups_layer_s, outside_moe_s, router_side_s)

HOT_POOL = "experts"  # AppConfig's `expert_pool` (configs/pools.py DEFAULT_POOL): the groups in no named pool
NODE_LABEL = "switchyard.io/node-type"  # the label each pool's nodes carry (docs/operations.md)


@dataclass(frozen=True)
class GroupSide:
    """Where a group runs: a hardware profile, GPUs a replica, replicas."""

    hw: HardwareProfile
    gpus: int
    replicas: int


@dataclass(frozen=True)
class Split:
    hw: HardwareProfile
    cold: tuple[int, ...]  # group indices in the cold pool
    side: GroupSide
    step_s: float
    dollars_per_hour: float


def passes(m: ModelShape, d: Deployment, shares: np.ndarray, side: GroupSide) -> tuple[np.ndarray, np.ndarray]:
    """[layers, groups]: each group's pass and replica busy time in each layer, were it on `side`."""
    pairs = shares * (d.batch_per_router / d.micro_batches * m.top_k)  # one router micro-batch's pairs a group
    out = np.array([[group_pass_s(m, side.hw, d, a, side.replicas, side.gpus) for a in row] for row in pairs])
    return out[..., 0], out[..., 1]


def routers_part(m: ModelShape, primary: HardwareProfile, d: Deployment) -> tuple[float, ...]:
    """What the routers (on the primary) spend a layer and a step, whatever the groups run on."""
    return (*router_side_s(m, primary, d), outside_moe_s(m, primary, d))


def step_s(m: ModelShape, d: Deployment, routers: tuple[float, ...], chain: np.ndarray, busy: np.ndarray) -> float:
    """The decode step with each group's own pass and busy time: a layer waits for its slowest group."""
    att, trip, bytes_s, outside = routers
    layers = [groups_layer_s(d, att, trip, bytes_s, c, u) for c, u in zip(chain.max(axis=1), busy.max(axis=1))]
    return m.num_moe_layers * float(np.mean(layers)) + outside


def pool_step_s(m: ModelShape, primary: HardwareProfile, d: Deployment, shares: np.ndarray,
                sides: list[GroupSide]) -> float:
    """The step with group g on sides[g] (the primary's routers)."""
    parts = [passes(m, d, shares[:, [g]], side) for g, side in enumerate(sides)]
    return step_s(m, d, routers_part(m, primary, d), np.hstack([c for c, _ in parts]),
                  np.hstack([u for _, u in parts]))


def _unusable(primary: HardwareProfile, hw: HardwareProfile, d: Deployment) -> str | None:
    if hw.name != primary.name and d.transport == "nvlink":
        return "the plan's nvlink transport stays within one node; groups on another node type need rdma"
    if d.transport not in hw.transports:
        return f"{hw.name} has no {d.transport} transport"
    return None


def best_split(m: ModelShape, primary: HardwareProfile, d: Deployment, shares: np.ndarray, hw: HardwareProfile,
               base_step: float) -> tuple[Split | None, str]:
    """The cheapest cold pool on `hw` that keeps the step, or None and why not."""
    G = d.num_groups
    why = _unusable(primary, hw, d)
    if why:
        return None, why
    order = np.argsort(-shares.mean(axis=0), kind="stable")  # hottest first
    hot_chain, hot_busy = passes(m, d, shares, GroupSide(primary, d.gpus_per_group_replica, d.group_replicas))
    hot_price = d.gpus_per_group_replica * d.group_replicas * primary.price_per_hour  # a hot group, per hour
    routers = routers_part(m, primary, d)
    least = gpus_per_group_replica(m, hw, G)
    best: Split | None = None
    for gpus in range(least, max(least, hw.devices_per_node) + 1):
        for replicas in range(1, d.group_replicas + 1):
            side = GroupSide(hw, gpus, replicas)
            chain, busy = passes(m, d, shares, side)
            for k in range(1, G):
                cold = np.zeros(G, dtype=bool)
                cold[order[G - k:]] = True
                step = step_s(m, d, routers, np.where(cold, chain, hot_chain), np.where(cold, busy, hot_busy))
                if step > base_step * (1 + 1e-9):
                    continue  # a cold group would be a layer's slowest: the step would grow
                cost = (G - k) * hot_price + k * gpus * replicas * hw.price_per_hour
                if best is None or (cost, step) < (best.dollars_per_hour, best.step_s):
                    best = Split(hw, tuple(sorted(int(g) for g in order[G - k:])), side, step, cost)
    if best is None:
        return None, (f"no cold group on {hw.name} keeps the {1000 * base_step:.1f} ms step (up to "
                      f"{max(least, hw.devices_per_node)} GPUs x {d.group_replicas} replicas a group)")
    return best, ""


def recommend_pools(m: ModelShape, primary: HardwareProfile, d: Deployment, shares: np.ndarray,
                    candidates: list[HardwareProfile], source: str = "") -> dict:
    """The cheapest hot/cold split of `d`'s groups over `candidates` (JSON-ready), against all on `primary`."""
    if d.layout != "groups":
        raise ValueError("pools split the expert groups of a groups plan")
    G = d.num_groups
    shares = np.asarray(shares, dtype=np.float64).reshape(-1, G)
    base_chain, base_busy = passes(m, d, shares, GroupSide(primary, d.gpus_per_group_replica, d.group_replicas))
    base_step = step_s(m, d, routers_part(m, primary, d), base_chain, base_busy)
    routers = d.routers * d.gpus_per_router * primary.price_per_hour
    hot_price = d.gpus_per_group_replica * d.group_replicas * primary.price_per_hour
    base_cost = routers + G * hot_price
    tokens = d.routers * d.batch_per_router / base_step
    out = {"load_source": source, "load_shares": [round(float(x), 4) for x in shares.mean(axis=0)],
           "baseline": {"hardware": primary.name, "dollars_per_hour": base_cost, "step_s": base_step,
                        "dollars_per_million": cost_per_million(tokens, 1, base_cost)},
           "by_hardware": [], "recommended": False, "pools": [], "app_config": None}
    best: Split | None = None
    for hw in candidates if G > 1 else []:
        split, why = best_split(m, primary, d, shares, hw, base_step)
        row = {"hardware": hw.name, "reason": why}
        if split is not None:
            row.update(cold_groups=len(split.cold), gpus_per_replica=split.side.gpus, replicas=split.side.replicas,
                       saving=1.0 - (routers + split.dollars_per_hour) / base_cost)
            if split.dollars_per_hour >= G * hot_price - 1e-9:
                each = split.side.gpus * split.side.replicas * hw.price_per_hour
                row["reason"] = (f"keeping the step takes {split.side.gpus} GPUs x {split.side.replicas} replicas "
                                 f"a cold group (${each:,.2f}/h each against ${hot_price:,.2f}/h a group on "
                                 f"{primary.name})")
            elif best is None or split.dollars_per_hour < best.dollars_per_hour:
                best = split
        out["by_hardware"].append(row)
    if best is None:
        reasons = "; ".join(f"{r['hardware']}: {r['reason']}" for r in out["by_hardware"]) or "one expert group"
        out["summary"] = f"no saving: {reasons}"
        return out
    cost = routers + best.dollars_per_hour
    hot = [g for g in range(G) if g not in best.cold]
    name = f"cold-{node_type(best.hw.name)}"
    pools = [_pool(HOT_POOL, primary, hot, GroupSide(primary, d.gpus_per_group_replica, d.group_replicas), shares),
             _pool(name, best.hw, list(best.cold), best.side, shares)]
    tokens = d.routers * d.batch_per_router / best.step_s
    out.update(recommended=True, pools=pools, dollars_per_hour=cost, step_s=best.step_s,
               dollars_per_million=cost_per_million(tokens, 1, cost), saving_dollars_per_hour=base_cost - cost,
               saving=1.0 - cost / base_cost, app_config=app_config(d, primary, pools),
               summary=f"{len(best.cold)} of {G} groups on {best.hw.name}: ${cost:,.2f}/h against "
                       f"${base_cost:,.2f}/h all on {primary.name} ({1.0 - cost / base_cost:.1%} less)")
    return out


def _pool(name: str, hw: HardwareProfile, groups: list[int], side: GroupSide, shares: np.ndarray) -> dict:
    return {"name": name, "hardware": hw.name, "groups": sorted(groups), "gpus_per_replica": side.gpus,
            "replicas": side.replicas, "price_per_replica_hour": side.gpus * hw.price_per_hour,
            "dollars_per_hour": len(groups) * side.replicas * side.gpus * hw.price_per_hour,
            "load_share": float(shares.mean(axis=0)[groups].sum())}


def node_type(hw_name: str) -> str:
    """A profile's name as a pool name and a node label value (lower case, letters, digits and dashes)."""
    return re.sub(r"[^a-z0-9-]+", "-", hw_name.lower()).strip("-") or "gpu"


def app_config(d: Deployment, primary: HardwareProfile, pools: list[dict]) -> dict:
    """The split as `switchyard.cluster.app:build_app` args (less `model`): routers and hot groups on the
    primary's nodes, the cold pool on its own, each at its planned (peak) size and price."""
    hot, cold = pools
    nodes = lambda name: {"label_selector": {NODE_LABEL: node_type(name)}}  # noqa: E731
    return {
        "num_groups": d.num_groups, "device": "cuda",
        "router": {"max_num_seqs": d.batch_per_router, "micro_batches": d.micro_batches},
        "router_pool": {"num_gpus": d.gpus_per_router, "num_replicas": d.routers, "nodes": nodes(primary.name)},
        "expert_pool": {"num_gpus": hot["gpus_per_replica"], "num_replicas": hot["replicas"],
                        "nodes": nodes(hot["hardware"])},
        "expert_pools": [{"name": cold["name"], "groups": cold["groups"], "num_gpus": cold["gpus_per_replica"],
                          "num_replicas": cold["replicas"], "replica_per_hour": cold["price_per_replica_hour"],
                          "nodes": nodes(cold["hardware"])}],
        "prices": {"router_replica_per_hour": d.gpus_per_router * primary.price_per_hour,
                   "expert_replica_per_hour": hot["price_per_replica_hour"]},
    }


def cheaper_profiles(primary: HardwareProfile, profiles: dict[str, HardwareProfile]) -> list[HardwareProfile]:
    """The default candidates: the primary (fewer replicas for cold groups) and every cheaper GPU profile."""
    return [primary] + [p for p in profiles.values()
                        if p.price_per_hour < primary.price_per_hour and p.name != primary.name]
