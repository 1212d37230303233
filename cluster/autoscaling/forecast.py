"""Each expert group's decode load, forecast from the requests the router holds: pure functions on arrays.

The router knows a running request's routing at every MoE layer once its prompt is prefilled, and can guess a
waiting request's from its prompt alone (router/prompt_forecast.py). Its decode tokens tend to go where its
prompt went, so the sum over requests says which groups the load is about to reach, before the groups have
computed it: the groups' autoscaling takes it as a floor (`GroupLoad.floor_rows_per_s`).

Glossary
- picks [L, E]: expected picks of each expert by one token of a request at each MoE layer (rows sum to top_k)
- visits [L, G]: probability that one token of the request is sent to group g at layer l; a visit is one row
  for the group (a row = one token at one layer, as `load_meter.py` counts them)
- rows per token [G]: visits summed over layers: rows the request's next token gives each group
- forecast [G]: rows per second, summed over requests: rows per token x tokens each sequence decodes a second

A running request's picks are its own routing so far (prompt and output, every layer), blended with the
layer's popularity as a prior worth `prior_tokens` tokens; a waiting request's are its prompt's first-layer
picks carried to later layers by the transition matrix, blended the same way.

`looked_ahead` carries a floor's recent values along their trend by the time a replica takes to serve, so that
a replica asked for on a rising load serves when that load arrives (demand.FloorTrend).
"""

from __future__ import annotations

import numpy as np


def blended_picks(counts: np.ndarray, tokens: np.ndarray, popularity: np.ndarray, prior_tokens: float) -> np.ndarray:
    """counts [R, L, E] picks observed per request (over `tokens` [R] tokens), popularity [L, E] (rows sum to
    top_k) -> picks [R, L, E]: the request's own mix, pulled toward popularity while it has few tokens."""
    weight = np.asarray(tokens, np.float64)[:, None, None]
    return (counts + prior_tokens * popularity[None]) / np.maximum(weight + prior_tokens, 1e-12)


def propagated_picks(first: np.ndarray, transition: np.ndarray, top_k: int) -> np.ndarray:
    """first [R, E] picks at the first MoE layer (rows sum to top_k), transition [L-1, E, E] (rows sum to 1) ->
    picks [R, L, E]: P(l+1) = P(l) T_l, as `prediction.transition_scores` carries one token."""
    out = [first]
    distribution = first / top_k
    for step in transition:
        distribution = distribution @ step
        out.append(distribution * top_k)
    return np.stack(out, axis=1)


def group_picks(picks: np.ndarray, holds: np.ndarray) -> np.ndarray:
    """picks [R, L, E], holds [L, G, E] bool -> expected picks per group [R, L, G]. A replicated expert's picks
    are split evenly over its holders (where least-loaded dispatch sends them on average)."""
    share = holds / np.maximum(holds.sum(axis=1, keepdims=True), 1)  # [L, G, E]
    return np.einsum("rle,lge->rlg", picks, share)


def visit_probability(per_group: np.ndarray, top_k: int) -> np.ndarray:
    """Expected picks per group [..., G] (summing to top_k) -> [..., G] probability a token visits the group:
    1 - (1 - q/k)^k, its k picks taken as independent draws (a group with all k expected picks: 1)."""
    q = np.clip(per_group / top_k, 0.0, 1.0)
    return 1.0 - (1.0 - q) ** top_k


def rows_per_token(picks: np.ndarray, holds: np.ndarray, top_k: int) -> np.ndarray:
    """picks [R, L, E] -> [R, G]: rows each request's next token gives each group (its visits over layers)."""
    return visit_probability(group_picks(picks, holds), top_k).sum(axis=1)


def forecast_rows_per_s(per_token: np.ndarray, tokens_per_s_per_seq: float) -> np.ndarray:
    """[R, G] rows per token of every request -> [G] rows per second the groups will get while they all run."""
    return per_token.sum(axis=0) * tokens_per_s_per_seq


def relative_error(forecast: np.ndarray, measured: np.ndarray) -> float | None:
    """sum |forecast - measured| / sum measured over groups; None while nothing was measured."""
    total = float(np.sum(measured))
    if total <= 0:
        return None
    return float(np.abs(np.asarray(forecast) - np.asarray(measured)).sum() / total)


def top_k_recall(predicted: np.ndarray, actual: np.ndarray, k: int) -> float:
    """predicted, actual [..., E] scores -> mean over rows of |top-k(predicted) ∩ top-k(actual)| / k."""
    p = np.argsort(-predicted, axis=-1, kind="stable")[..., :k]
    a = np.argsort(-actual, axis=-1, kind="stable")[..., :k]
    return float((p[..., :, None] == a[..., None, :]).any(axis=-1).mean())


def looked_ahead(times, values, horizon_s: float, window_s: float) -> float:
    """The value `horizon_s` ahead: the least-squares line through the points of the last `window_s`, at the
    last time plus the horizon; never below the last value, since a floor may only raise a group's need (a
    falling trend gives the present). Fewer than two points, no spread in time, or a horizon of 0: the last
    value.

    The horizon is what a replica takes to serve once the load asks for it (Serve's upscale delay plus its
    start), so a replica asked for on a rising trend serves when that load arrives. The line, not the last
    value plus a slope, so that the floor rises smoothly: Serve adds a replica only after its policy wanted
    more for the whole upscale delay without a break, and one noisy tick below the line would be such a break."""
    t = np.asarray(times, np.float64)
    v = np.asarray(values, np.float64)
    if len(v) == 0:
        return 0.0
    present = float(v[-1])
    if horizon_s <= 0:
        return present
    recent = t >= t[-1] - window_s
    t, v = t[recent], v[recent]
    spread = t - t.mean()
    if len(v) < 2 or not np.any(spread):
        return present
    slope = float((spread * (v - v.mean())).sum() / (spread * spread).sum())
    return max(present, float(v.mean()) + slope * (t[-1] + horizon_s - t.mean()))


def trend_window_s(horizon_s: float) -> float:
    """The window whose trend is extrapolated `horizon_s` ahead: twice the horizon, so that a noisy forecast's
    slope, multiplied by the horizon, moves the floor by a fraction of the noise rather than a multiple of it;
    at least 10 s (ten of the router's once-a-second ticks)."""
    return max(2.0 * horizon_s, 10.0)
