"""The router's re-placement service: whether this app may re-place while serving, from which placement it
starts, and the Replacer wired to the router's dispatch (what `/v1/switchyard/placement` drives)."""

from __future__ import annotations

import ray

from switchyard.cluster.api.placement_routes import PlacementService
from switchyard.cluster.deployments.registry import get_registry
from switchyard.cluster.dispatch.placement_tables import GroupChooser, load_placement
from switchyard.cluster.replacement.replacer import Replacer
from switchyard.configs.serve import AppConfig
from switchyard.experts.checkpoint import Checkpoint
from switchyard.router.affinity.placement import Placement


def replacement_refused(cfg: AppConfig) -> str:
    """Why this app cannot re-place while serving, or "" if it can."""
    if cfg.experts_in_router:
        return "num_groups 0: every expert is in the router, there is nothing to place"
    if cfg.router_pool.autoscaling is not None or cfg.router_pool.num_replicas > 1:
        return "the app runs several router replicas, and a switch changes one router's tables"
    if cfg.expert_kernel != "torch":
        return f"expert kernel {cfg.expert_kernel!r}: its prepacked weights are not re-packed while serving"
    return ""


def current_placement(cfg: AppConfig, ckpt: Checkpoint, deploy_id: str) -> tuple[Placement, int]:
    """(placement, version): the registry's, after a re-placement (a router restarted since), else the config's.
    A switch left half done by a router that died is forgotten: its replicas hold both versions' experts, so the
    current one serves, and they drop the extras at the next switch."""
    registry = get_registry(cfg.name)
    state = ray.get(registry.placement_state.remote(deploy_id))
    if state.target_version is not None and not replacement_refused(cfg):
        state = ray.get(registry.end_switch.remote(deploy_id, state.target_version, False))
    if state.placement is None:
        return load_placement(cfg.placement, ckpt.config, cfg.num_groups), 0
    return Placement.from_json(state.placement), state.version


async def in_a_ray_task(fn, *args):
    """fn(*args) in a Ray task: a placement fit is mostly Python-level loops, which in a thread of the router's
    process hold the GIL its engine thread steps with. `switchyard bench replace` on two busy cores: the steps
    of the switch phase took 2.5x those before it with the fit in a thread, 1.7x with it in a task."""
    return await ray.remote(num_cpus=0)(fn).remote(*args)


def placement_service(cfg: AppConfig, deploy_id: str, placement: Placement | None, version: int, window,
                      experts, engine) -> PlacementService:
    """The service behind /v1/switchyard/placement. `experts` is the router's RemoteExperts (None: every expert in
    the router) and `engine` its AsyncEngine: a switch lands on the engine thread, between two steps."""
    stats = experts.stats if experts is not None else None
    service = PlacementService(window, None, stats.dispatch_counters if stats else lambda: (0, 0),
                               cfg.replacement.min_tokens, replacement_refused(cfg), compute=in_a_ray_task)
    if service.refused:
        return service

    def switch(chooser: GroupChooser) -> None:  # on the engine thread, between two steps
        experts.use_placement(chooser)
        service.marked(engine.num_unfinished)

    names = [cfg.group_deployment_name(g) for g in range(cfg.num_groups)]
    service.replacer = Replacer(get_registry(cfg.name), deploy_id, names, placement, version, GroupChooser, switch,
                                engine.call_between_steps, cfg.replacement.switch_timeout_s)
    return service
