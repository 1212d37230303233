"""What serving costs: replica-hours of each pool against the tokens they produce. Pure functions.

Expert groups may run in pools on different hardware (`expert_pools`), so a price is per group: a float is the
same price for every group."""

from __future__ import annotations

from typing import Sequence

ROUTER_POOL = "router"


def group_prices(expert_price: float | Sequence[float], groups: int) -> list[float]:
    return [float(expert_price)] * groups if isinstance(expert_price, (int, float)) else [float(p) for p in expert_price]


def cost_per_hour(router_replicas: int, expert_replicas: list[int], router_price: float,
                  expert_price: float | Sequence[float]) -> float:
    """Dollars per hour of the deployed replicas (price per replica-hour of each pool, or of each group)."""
    prices = group_prices(expert_price, len(expert_replicas))
    return router_replicas * router_price + sum(n * p for n, p in zip(expert_replicas, prices))


def cost_per_million_tokens(dollars_per_hour: float, tokens_per_second: float) -> float | None:
    """Dollars per million generated tokens at this throughput; None while nothing is generated."""
    if tokens_per_second <= 0:
        return None
    return dollars_per_hour / (tokens_per_second * 3600.0) * 1e6


def _pool(replicas: int, price: float, groups: list[int] | None = None) -> dict:
    """One pool's line: a pool running replicas at price 0 is not priced (None), never $0."""
    line = {"replicas": replicas, "replica_per_hour": price,
            "dollars_per_hour": replicas * price if replicas == 0 or price > 0 else None}
    return line if groups is None else {"groups": groups, **line}


def cost_report(router_replicas: int, expert_replicas: list[int], router_price: float,
                expert_price: float | Sequence[float], tokens_per_second: float,
                pools: dict[str, list[int]] | None = None) -> dict:
    """Live cost of the replicas deployed now, in all and per pool (`pools`: pool name -> its groups; default
    one pool `experts` of every group). A pool that runs replicas at price 0 is not priced: then the dollar
    figures are None and `priced` is False, rather than a cost of $0 that would read as free."""
    prices = group_prices(expert_price, len(expert_replicas))
    if pools is None:  # every group in one pool: the priced check below then covers every group
        pools = {"experts": list(range(len(expert_replicas)))} if expert_replicas else {}
    lines = {ROUTER_POOL: _pool(router_replicas, router_price)}
    for name, groups in pools.items():
        if groups:
            lines[name] = _pool(sum(expert_replicas[g] for g in groups), prices[groups[0]], list(groups))
    priced = all(line["dollars_per_hour"] is not None for line in lines.values())
    hourly = cost_per_hour(router_replicas, expert_replicas, router_price, prices) if priced else None
    return {"priced": priced, "dollars_per_hour": hourly, "tokens_per_second": tokens_per_second,
            "cost_per_million_tokens": None if hourly is None else cost_per_million_tokens(hourly, tokens_per_second),
            "router_replicas": router_replicas, "expert_replicas": expert_replicas, "pools": lines}
