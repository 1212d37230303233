"""The router as a Ray Serve deployment: the dense model, the KV cache, continuous batching, and the
OpenAI API as its HTTP ingress. Its experts are the expert-group deployments."""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path

import ray
import torch
from fastapi import Response
from ray import serve

from switchyard.cluster.api_keys import resolve_api_keys
from switchyard.cluster import tracing
from switchyard.cluster.compiled_transport import CompiledGraphTransport
from switchyard.cluster.group_demand import GroupDemand, report_floors
from switchyard.cluster.groups import GroupChooser, load_placement
from switchyard.cluster.openai_api import ServedModel, build_openai_app
from switchyard.cluster.placement_api import PlacementService, add_placement_routes
from switchyard.cluster.registry import get_registry
from switchyard.cluster.remote_experts import RemoteExperts
from switchyard.cluster.replacement import Replacer
from switchyard.cluster.telemetry import RouterTelemetry
from switchyard.cluster.transport import ActorTransport, HandleTransport
from switchyard.configs.serve import AppConfig
from switchyard.experts.checkpoint import Checkpoint
from switchyard.router.async_engine import AsyncEngine
from switchyard.router.engine import Engine
from switchyard.router.affinity.placement import Placement
from switchyard.router.generation_config import load_sampling_defaults
from switchyard.router.trace_recorder import RoutingWindow, trace_metadata

api = build_openai_app()
add_placement_routes(api)


def plan_placement(config: AppConfig, ckpt: Checkpoint):
    return load_placement(config.placement, ckpt.config, config.num_groups)


def make_transport(cfg: AppConfig, group_handles: list):
    names = [cfg.group_deployment_name(g) for g in range(cfg.num_groups)]
    timeout = cfg.router.expert_timeout_s
    if cfg.router.transport == "compiled":
        return CompiledGraphTransport(cfg.name, names, timeout_s=timeout, max_in_flight=2 * cfg.router.micro_batches,
                                      idle_teardown_s=cfg.router.compiled_idle_teardown_s)
    if cfg.router.transport == "actor":
        return ActorTransport(cfg.name, names, timeout_s=timeout)
    return HandleTransport(group_handles, timeout_s=timeout)


def kv_cache_stats(engine: Engine) -> dict:
    """The paged KV cache's size and use (read from another thread: plain ints, a snapshot at most a step old)."""
    cache = engine.cache
    free = cache.num_free_blocks
    return {"blocks": cache.num_blocks, "free_blocks": free, "block_size": cache.block_size,
            "bytes": cache.nbytes(), "device": str(cache.device), "usage": 1 - free / cache.num_blocks,
            "preemptions": engine.scheduler.num_preemptions}


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
        return plan_placement(cfg, ckpt), 0
    return Placement.from_json(state.placement), state.version


async def in_a_ray_task(fn, *args):
    """fn(*args) in a Ray task: a placement fit is mostly Python-level loops, which in a thread of the router's
    process hold the GIL its engine thread steps with. `switchyard bench replace` on two busy cores: the steps
    of the switch phase took 2.5x those before it with the fit in a thread, 1.7x with it in a task."""
    return await ray.remote(num_cpus=0)(fn).remote(*args)


# Serve pickles this class by value when the module is imported: what it calls must be defined above it.
@serve.deployment
@serve.ingress(api)
class RouterDeployment:
    def __init__(self, config: dict, group_handles: list, deploy_id: str = ""):
        cfg = AppConfig.model_validate(config)
        if cfg.router_pool.torch_threads:
            torch.set_num_threads(cfg.router_pool.torch_threads)
        ckpt = Checkpoint.open(cfg.model)
        tracing.configure("switchyard-router")  # on when the replica's environment names an OTLP endpoint
        sampling_defaults = load_sampling_defaults(cfg.model)  # a bad file fails here, before any weights load
        self.telemetry = RouterTelemetry(cfg.name, cfg.prices.router_replica_per_hour,
                                         cfg.prices.expert_replica_per_hour)
        self.transport = None
        self.experts = None  # with every expert in this process (num_groups 0), the engine holds them
        self._stop = threading.Event()
        placement, version = None, 0
        if not cfg.experts_in_router:
            placement, version = current_placement(cfg, ckpt, deploy_id)
            self.transport = make_transport(cfg, group_handles)
            self.experts = RemoteExperts(GroupChooser(placement), self.transport, cfg.num_groups,
                                         on_dispatch=self.telemetry.on_dispatch,
                                         on_layer_done=self.telemetry.on_layer_done)
        self.telemetry.replicas = lambda: (cfg.router_pool.num_replicas, self._expert_replicas(cfg))
        engine_config = cfg.engine_config()
        engine = Engine.from_checkpoint(ckpt, engine_config, self.experts)
        engine.micro_batches = cfg.router.micro_batches
        if tracing.enabled() and cfg.telemetry.trace_steps_every:
            engine.step_tracer = tracing.StepTracer(cfg.telemetry.trace_steps_every)
        scheduler = engine.scheduler
        self.telemetry.queue_lengths = lambda: (len(scheduler.running), len(scheduler.waiting))
        self.telemetry.kv_cache = lambda: kv_cache_stats(engine)
        self.steps: deque = deque(maxlen=1 << 16)  # (end time.monotonic, seconds, outputs), for benchmarks
        self.engine = AsyncEngine(engine, on_step=self._on_step)
        window = None
        if cfg.replacement.window_tokens and self.experts is not None:  # the rolling fit's recent routing
            window = RoutingWindow(trace_metadata(ckpt.config, Path(cfg.model).name), cfg.replacement.window_tokens)
            engine.observer = window
        self.placement_service = self._placement_service(cfg, deploy_id, placement, version, window)
        api.state.placement = self.placement_service
        self.group_handles = group_handles
        if self.experts is not None and cfg.expert_pool.autoscaling is not None:  # the groups' floor
            demand = GroupDemand(lambda: self.experts.stats.tokens_per_group)
            names = [cfg.group_deployment_name(g) for g in range(cfg.num_groups)]
            threading.Thread(target=report_floors, daemon=True, name="switchyard-group-floors",
                             args=(demand, names, get_registry(cfg.name), self.telemetry.queue_lengths,
                                   self._stop)).start()
        name = cfg.served_model_name or Path(cfg.model).name
        api.state.api_keys = resolve_api_keys(cfg.api_keys)
        api.state.served = ServedModel(name, self.engine, engine_config.max_model_len, int(time.time()),
                                       cfg.router.max_waiting_requests, cfg.router.max_request_bytes,
                                       sampling_defaults, telemetry=self.telemetry)

    def _on_step(self, stats, outputs) -> None:
        self.telemetry.on_step(stats.kind, stats.seconds, len(outputs))
        self.steps.append((time.monotonic(), stats.seconds, len(outputs)))

    def _placement_service(self, cfg: AppConfig, deploy_id: str, placement, version: int, window) -> PlacementService:
        stats = self.experts.stats if self.experts is not None else None
        service = PlacementService(window, None, lambda: (stats.group_messages, stats.token_layers) if stats else (0, 0),
                                   cfg.replacement.min_tokens, replacement_refused(cfg), compute=in_a_ray_task)
        if service.refused:
            return service

        def switch(chooser: GroupChooser) -> None:  # on the engine thread, between two steps
            self.experts.choose_groups = chooser
            service.marked(self.engine.num_unfinished)

        names = [cfg.group_deployment_name(g) for g in range(cfg.num_groups)]
        service.replacer = Replacer(get_registry(cfg.name), deploy_id, names, placement, version, GroupChooser, switch,
                                    self.engine.call_between_steps, cfg.replacement.switch_timeout_s)
        return service

    def step_records(self, since: float = 0.0) -> list[tuple[float, float, int]]:
        """(end time, seconds, outputs) of the steps that ended after `since` (time.monotonic of this node)."""
        return [record for record in list(self.steps) if record[0] > since]

    def _expert_replicas(self, cfg: AppConfig) -> list[int]:
        if self.transport is None:
            return []
        if isinstance(self.transport, (ActorTransport, CompiledGraphTransport)):
            return self.transport.replica_counts()
        return [cfg.expert_pool.num_replicas] * cfg.num_groups

    @api.get("/v1/switchyard/stats")
    def stats(self) -> dict:
        """Dispatch counters, the last step and the cost, for benchmarks and dashboards."""
        step = self.engine.engine.last_step
        dispatch = {"fan_out": None, "token_layers": 0, "group_calls": 0, "tokens_per_group": []}
        if self.experts is not None:
            s = self.experts.stats
            dispatch = {"fan_out": s.fan_out, "token_layers": s.token_layers, "group_messages": s.group_messages,
                        "group_calls": s.calls, "tokens_per_group": list(s.tokens_per_group)}
        return {**dispatch, "experts": "router" if self.experts is None else "groups",
                "step_errors": self.engine.errors, "last_step": None if step is None else vars(step),
                "kv_cache": kv_cache_stats(self.engine.engine), "cost": self.telemetry.cost()}

    @api.get("/metrics")
    def metrics(self) -> Response:
        return Response(self.telemetry.prometheus_text(), media_type="text/plain; version=0.0.4")

    async def bench(self, prompts: list[list[int]], max_tokens: int) -> dict:
        """Run a batch through this router's engine (no HTTP in the way); decode-step timings and fan-out."""
        from switchyard.cluster.bench.decode import decode_summary, run_batch

        engine = self.engine.engine
        engine.step_log.clear()
        stats = self.experts.stats if self.experts is not None else None
        before = (stats.group_messages, stats.token_layers) if stats else (0, 0)
        seconds = await run_batch(self.engine, prompts, max_tokens)
        fan_out = None
        if stats is not None:
            fan_out = (stats.group_messages - before[0]) / max(1, stats.token_layers - before[1])
        return {**decode_summary(list(engine.step_log), seconds), "fan_out": fan_out}

    def round_trip(self, num_tokens: int, repeats: int) -> float:
        """Seconds for one layer's dispatch to every group and back, on random routing."""
        from switchyard.cluster.bench.decode import time_round_trip

        return time_round_trip(self.experts, self.engine.engine.model, num_tokens, repeats)

    async def group_info(self) -> list[dict]:
        """What each expert group replica loaded (one answer per group, from whichever replica Serve picks)."""
        return [await handle.info.remote() for handle in self.group_handles]

    def __del__(self):
        if hasattr(self, "_stop"):
            self._stop.set()
        if hasattr(self, "engine"):  # __init__ may have failed
            self.engine.shutdown()
        if getattr(self, "transport", None) is not None:
            self.transport.close()
