"""What serving costs: replica-hours of each pool against the tokens they produce. Pure functions."""

from __future__ import annotations


def cost_per_hour(router_replicas: int, expert_replicas: list[int], router_price: float, expert_price: float) -> float:
    """Dollars per hour of the deployed replicas (price per replica-hour of each pool)."""
    return router_replicas * router_price + sum(expert_replicas) * expert_price


def cost_per_million_tokens(dollars_per_hour: float, tokens_per_second: float) -> float | None:
    """Dollars per million generated tokens at this throughput; None while nothing is generated."""
    if tokens_per_second <= 0:
        return None
    return dollars_per_hour / (tokens_per_second * 3600.0) * 1e6


def cost_report(router_replicas: int, expert_replicas: list[int], router_price: float, expert_price: float,
                tokens_per_second: float) -> dict:
    """Live cost of the replicas deployed now. A pool that runs replicas at price 0 is not priced: then the
    dollar figures are None and `priced` is False, rather than a cost of $0 that would read as free."""
    priced = (router_replicas == 0 or router_price > 0) and (sum(expert_replicas) == 0 or expert_price > 0)
    hourly = cost_per_hour(router_replicas, expert_replicas, router_price, expert_price) if priced else None
    return {"priced": priced, "dollars_per_hour": hourly, "tokens_per_second": tokens_per_second,
            "cost_per_million_tokens": None if hourly is None else cost_per_million_tokens(hourly, tokens_per_second),
            "router_replicas": router_replicas, "expert_replicas": expert_replicas}
