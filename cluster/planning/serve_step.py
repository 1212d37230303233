"""Serve's controller step for one simulated pool: the autoscaling policy called with a real
`ray.serve.config.AutoscalingContext`, then Serve's own scaling factors, up/down delays (at the simulated
clock) and the pool's bounds. Split from simulator.py, which calls `serve_decision` every controller period.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the simulator imports this module
    from switchyard.cluster.planning.simulated_pools import Pool
    from switchyard.cluster.planning.simulator import ScalingSettings


def serve_config(settings: ScalingSettings, max_replicas: int):
    """The pool's Serve `AutoscalingConfig` (its delays and bounds), built once per pool."""
    from ray.serve.config import AutoscalingConfig

    return AutoscalingConfig(min_replicas=settings.min_replicas, max_replicas=max_replicas,
                             upscale_delay_s=settings.upscale_delay_s, downscale_delay_s=settings.downscale_delay_s)


def _context(name: str, current: int, metrics: dict, state: dict, now: float, settings: ScalingSettings,
             max_replicas: int, config):
    from ray.serve._private.common import DeploymentID
    from ray.serve.config import AutoscalingContext

    return AutoscalingContext(
        deployment_id=DeploymentID(name=name, app_name="sim"), deployment_name=name, app_name="sim",
        current_num_replicas=current, target_num_replicas=current, running_replicas=[],
        total_num_requests=0.0, total_queued_requests=0.0, aggregated_metrics=metrics, raw_metrics={},
        capacity_adjusted_min_replicas=settings.min_replicas, capacity_adjusted_max_replicas=max_replicas,
        policy_state=state, last_scale_up_time=None, last_scale_down_time=None, current_time=now, config=config)


def serve_decision(pool: Pool, metrics: dict, now: float, settings: ScalingSettings) -> int:
    """The pool's new target: the policy, then Serve's scaling factors, delays and bounds (Serve's own code)."""
    from ray.serve.autoscaling_policy import _apply_delay_logic, _apply_scaling_factors

    if pool.config is None:
        pool.config = serve_config(settings, pool.max_replicas)
    ctx = _context(pool.name, pool.target, metrics, dict(pool.state), now, settings, pool.max_replicas, pool.config)
    desired, user_state = pool.policy(ctx)
    desired = _apply_scaling_factors(desired, ctx.current_num_replicas, ctx.config)
    final, internal = _apply_delay_logic(max(0, desired), ctx.target_num_replicas, ctx.config, dict(pool.state),
                                         _now=now)
    pool.state = {**user_state, **internal}
    return max(settings.min_replicas, min(pool.max_replicas, final))
