"""`build_app`: the Switchyard Serve application — one router deployment and one deployment per expert group,
or, with `num_groups: 0`, the router alone holding every expert (one process).

Used by `serve run` / `serve deploy` (import path `switchyard.cluster.app:build_app`, `args` = AppConfig),
by `switchyard serve`, and by the Helm chart's `serveConfigV2`.
"""

from __future__ import annotations

import uuid

from ray.serve import Application
from switchyard.cluster.deployments.expert_group import ExpertGroupDeployment
from switchyard.cluster.deployments.router import RouterDeployment
from switchyard.cluster.dispatch.placement_tables import load_placement
from switchyard.cluster.observability import tracing
from switchyard.configs.serve import AppConfig
from switchyard.experts.checkpoint import Checkpoint
from switchyard.experts.vllm_kernel import load_ops


def build_app(args: dict) -> Application:
    config = args if isinstance(args, AppConfig) else AppConfig.model_validate(args)
    ckpt = Checkpoint.open(config.model)  # fail at start-up, naming the problem, not in a replica
    if config.expert_kernel == "vllm" and config.experts_device == "cpu":
        # here, naming the fix, rather than in every replica (a GPU cluster's head may have no GPU to check)
        load_ops()
    env = tracing.replica_env(config.telemetry.otlp_traces_endpoint)  # a bad OTEL_* protocol fails here
    # One id per deployment: the registry keeps placement versions under it (cluster/deployments/registry.py), so a
    # redeployed app starts from its own placement, not from a switch made on the one before.
    deploy_id = uuid.uuid4().hex
    bound_groups = []
    if not config.experts_in_router:
        bound_groups = bind_expert_groups(config, ckpt, env, deploy_id)
    router = RouterDeployment.options(name=f"{config.name}-router",
                                      **with_env(config.router_pool.deployment_options(), env))
    return router.bind(config.model_dump(exclude_unset=True), bound_groups, deploy_id)


def with_env(options: dict, env: dict[str, str]) -> dict:
    """Deployment options whose replicas get `env` (Ray merges env_vars with the app's runtime_env)."""
    if env:
        runtime_env = options["ray_actor_options"].setdefault("runtime_env", {})
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env}
    return options


def bind_expert_groups(config: AppConfig, ckpt: Checkpoint, env: dict[str, str] | None = None,
                       deploy_id: str = "") -> list:
    """One deployment per expert group, each with its pool's resources, nodes, device and autoscaling."""
    placement = load_placement(config.placement, ckpt.config, config.num_groups)
    names = [config.group_deployment_name(g) for g in range(config.num_groups)]
    bound_groups = []
    for index in range(config.num_groups):
        resolved = config.pool_of_group(index)
        pool = resolved.pool
        assignment = placement.experts_of_group(index)
        options = with_env(pool.deployment_options(index), env or {})
        if pool.autoscaling is not None:  # Serve's delays and bounds (deployment_options) around our policy
            options["autoscaling_config"]["policy"] = group_policy(config, index)
        deployment = ExpertGroupDeployment.options(name=names[index], **options)
        bound_groups.append(deployment.bind(config.name, names[index], config.model, assignment, config.dtype,
                                            resolved.device, pool.torch_threads, config.expert_kernel, names,
                                            deploy_id))
    return bound_groups


def group_policy(config: AppConfig, group: int) -> dict:
    """The custom Serve autoscaling policy of one expert group (cluster/autoscaling/policy.py)."""
    auto = config.pool_of_group(group).pool.autoscaling
    kwargs = {"group": group, "num_groups": config.num_groups, "target_utilization": auto.target_utilization,
              "hysteresis": auto.hysteresis, "min_replicas": auto.min_replicas, "max_replicas": auto.max_replicas,
              "capacity_rows_per_s": auto.capacity_rows_per_s}
    bound = config.expert_pool.autoscaling.max_cost_per_hour if config.expert_pool.autoscaling else None
    if bound is not None:  # the config checked that every group is priced and autoscaled
        pools = [config.pool_of_group(g) for g in range(config.num_groups)]
        kwargs |= {"budget_dollars_per_hour": bound - config.router_replicas_most * config.prices.router_replica_per_hour,
                   "group_prices": [p.replica_per_hour for p in pools],
                   "group_min_replicas": [p.pool.autoscaling.min_replicas for p in pools]}
    return {"policy_function": "switchyard.cluster.autoscaling.policy:ExpertGroupPolicy", "policy_kwargs": kwargs}
