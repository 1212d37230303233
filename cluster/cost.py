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
