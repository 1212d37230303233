"""Router metrics through OpenTelemetry, exported in Prometheus format at the router's `/metrics`, and over
OTLP when an endpoint is set for metrics (cluster/observability/tracing.py reads the standard variables).

Instruments: the GenAI semantic conventions' server metrics (request duration, time to first token, time per
output token, token usage by type) with their units and bucket boundaries; generated tokens, step time by
kind, running and waiting requests, expert-dispatch fan-out (groups per token per MoE layer), tokens sent to
each group (per-group load), per-layer dispatch time, replicas per pool, and the live cost of the replicas now
deployed ($/hour, output tokens/s, $ per million tokens; `cluster/autoscaling/cost.py`, absent while a pool is not
priced). docs/operations.md (Telemetry) lists every name.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Protocol

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from switchyard.cluster.autoscaling.cost import cost_report
from switchyard.cluster.observability import tracing

# Bucket boundaries the GenAI semantic conventions give for each histogram.
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
# Per-layer dispatch: a compiled-graph round trip is well under a millisecond, an actor call a few.
DISPATCH_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]
ROUTER_HISTOGRAMS = [  # (name, unit, description, bucket boundaries)
    ("gen_ai.server.request.duration", "s", "time from request to its last token", DURATION_BUCKETS),
    ("gen_ai.server.time_to_first_token", "s", "time from request to its first token", TTFT_BUCKETS),
    ("gen_ai.server.time_per_output_token", "s", "decode time per token after the first", TPOT_BUCKETS),
    ("gen_ai.server.token.usage", "{token}", "tokens per request, by gen_ai.token.type", TOKEN_BUCKETS),
    ("switchyard_dispatch_seconds", "s", "one MoE layer's dispatch, from send to combine", DISPATCH_BUCKETS),
]
# The groups' load forecast (expert_pool.autoscaling.forecast), per group: absent while the forecast is off.
FORECAST_GAUGES = [  # (name, key of LiveForecast.snapshot, description)
    ("switchyard_group_forecast_rows_per_second", "forecast_rows_per_s", "rows/s the router forecasts for the group"),
    ("switchyard_group_load_rows_per_second", "measured_rows_per_s", "rows/s the router sent the group lately"),
    ("switchyard_group_forecast_error", "error", "recent forecast error: sum |forecast - load| / sum load"),
]


class RouterGauges(Protocol):
    """What the router's gauges read from the deployment, on the scraping thread: snapshots, never locks."""

    def replica_counts(self) -> tuple[int, list[int]]:
        """(router replicas, replicas of each expert group)."""

    def queue_lengths(self) -> tuple[int, int]:
        """(running, waiting) requests."""

    def kv_cache_stats(self) -> dict:
        """At least `usage` (0 to 1) and `preemptions`."""


class NoGauges:
    """Before the router has an engine: one router, no groups, nothing queued, an empty cache."""

    def replica_counts(self) -> tuple[int, list[int]]:
        return 1, []

    def queue_lengths(self) -> tuple[int, int]:
        return 0, 0

    def kv_cache_stats(self) -> dict:
        return {"usage": 0.0, "preemptions": 0}


class RouterTelemetry:
    def __init__(self, app_name: str, router_price: float = 0.0, expert_price: float | list[float] = 0.0,
                 window_s: float = 60.0, pools: dict[str, list[int]] | None = None):
        """`expert_price`: per replica-hour, one for every group or one per group; `pools`: pool name -> its
        groups (the cost per pool), default one pool of every group."""
        readers = [InMemoryMetricReader()]
        self._prometheus = None
        try:  # Prometheus exposition when the exporter is installed (it is a dependency of switchyard)
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            readers.append(PrometheusMetricReader())
            self._prometheus = True
        except ImportError:
            pass
        readers += tracing.otlp_metric_readers()
        self.provider = MeterProvider(metric_readers=readers, resource=tracing.resource("switchyard-router"))
        self.reader = readers[0]
        meter = self.provider.get_meter("switchyard.router")
        self.attrs = {"app": app_name}
        self.tokens = meter.create_counter("switchyard_generated_tokens", unit="tokens")
        self.steps = meter.create_histogram("switchyard_step_seconds", unit="s")
        self.fan_out = meter.create_histogram("switchyard_dispatch_fan_out", unit="groups",
                                              description="expert groups a token is sent to, per MoE layer")
        self.group_tokens = meter.create_counter("switchyard_group_tokens", unit="tokens",
                                                 description="tokens sent to each expert group")
        meter.create_observable_gauge("switchyard_cost_per_million_tokens", unit="USD",
                                      callbacks=[self._observe("cost_per_million_tokens")],
                                      description="replica cost per million generated tokens")
        meter.create_observable_gauge("switchyard_cost_dollars_per_hour", unit="USD",
                                      callbacks=[self._observe("dollars_per_hour")],
                                      description="cost of the replicas deployed now (absent: not priced)")
        meter.create_observable_gauge("switchyard_pool_cost_dollars_per_hour", unit="USD",
                                      callbacks=[self._observe_pool_cost],
                                      description="cost of each pool's replicas now (pool = router, experts, or a "
                                                  "named pool of expert_pools; absent while it is not priced)")
        meter.create_observable_gauge("switchyard_output_tokens_per_second", unit="tokens/s",
                                      callbacks=[self._observe("tokens_per_second")])
        (self.request_duration, self.time_to_first_token, self.time_per_output_token, self.token_usage,
         self.dispatch_seconds) = [meter.create_histogram(name, unit=unit, description=description,
                                                          explicit_bucket_boundaries_advisory=buckets)
                                   for name, unit, description, buckets in ROUTER_HISTOGRAMS]
        meter.create_observable_gauge("switchyard_requests", callbacks=[self._observe_requests],
                                      unit="{request}", description="requests in the batch (state=running) "
                                                                    "or queued for a slot (state=waiting)")
        meter.create_observable_gauge("switchyard_kv_cache_usage", callbacks=[self._observe_kv("usage")], unit="1",
                                      description="share of the KV cache's blocks held by sequences (0 to 1)")
        meter.create_observable_counter("switchyard_preemptions", callbacks=[self._observe_kv("preemptions")],
                                        unit="{preemption}", description="sequences whose KV-cache blocks were "
                                                                         "taken back and recomputed later")
        meter.create_observable_gauge("switchyard_replicas", callbacks=[self._observe_replicas],
                                      unit="{replica}", description="replicas of each pool (router, expert groups)")
        for name, key, description in FORECAST_GAUGES:
            meter.create_observable_gauge(name, callbacks=[self._observe_forecast(key)], unit="1",
                                          description=description)
        self.forecast = None  # () -> the live forecast's snapshot (forecast_live.py), with the forecast on
        self.router_price, self.expert_price, self.pools = router_price, expert_price, pools
        self.gauges: RouterGauges = NoGauges()  # the router deployment, once its engine exists
        self._recent: deque[tuple[float, int]] = deque()
        # The engine thread writes the window while the HTTP thread (/metrics, stats, the cost gauge) reads
        # it: iterating a deque that another thread appends to raises "deque mutated during iteration".
        self._recent_lock = threading.Lock()
        # The SDK's Prometheus collector hands one collection's data to whichever scrape pops it first: two
        # concurrent scrapes would each miss some metrics. One scrape at a time.
        self._scrape_lock = threading.Lock()
        self.window_s = window_s

    # -- recording ----------------------------------------------------------------------------------------
    def on_step(self, kind: str, seconds: float, generated: int) -> None:
        self.steps.record(seconds, {**self.attrs, "kind": kind})
        self.tokens.add(generated, self.attrs)
        now = time.monotonic()
        with self._recent_lock:
            self._recent.append((now, generated))
            while self._recent and self._recent[0][0] < now - self.window_s:
                self._recent.popleft()

    def on_dispatch(self, num_tokens: int, tokens_per_group: dict[int, int]) -> None:
        if num_tokens:
            self.fan_out.record(sum(tokens_per_group.values()) / num_tokens, self.attrs)
        for group, tokens in tokens_per_group.items():
            self.group_tokens.add(tokens, {**self.attrs, "group": str(group)})

    def on_layer_done(self, layer: int, seconds: float) -> None:
        self.dispatch_seconds.record(seconds, {**self.attrs, "layer": layer})

    def on_request(self, operation: str, model: str, seconds: float, output=None, error_type: str | None = None):
        """One API request ended: `output` its final RequestOutput (None when refused before it ran), `error_type`
        set when it failed (tracing.error_type)."""
        attrs = {**self.attrs, "gen_ai.operation.name": operation, "gen_ai.request.model": model,
                 "gen_ai.provider.name": "switchyard"}
        self.request_duration.record(seconds, attrs if error_type is None else {**attrs, "error.type": error_type})
        if output is None or error_type is not None:
            return
        self.token_usage.record(output.prompt_tokens, {**attrs, "gen_ai.token.type": "input"})
        self.token_usage.record(len(output.token_ids), {**attrs, "gen_ai.token.type": "output"})
        if output.time_to_first_token is not None:
            self.time_to_first_token.record(output.time_to_first_token, attrs)
            if output.latency is not None and len(output.token_ids) > 1:
                per_token = (output.latency - output.time_to_first_token) / (len(output.token_ids) - 1)
                self.time_per_output_token.record(per_token, attrs)

    # -- reading ------------------------------------------------------------------------------------------
    def tokens_per_second(self) -> float:
        with self._recent_lock:
            recent = tuple(self._recent)
        if len(recent) < 2:
            return 0.0
        span = max(recent[-1][0] - recent[0][0], 1e-3)
        return sum(n for _, n in recent) / span

    def cost(self) -> dict:
        router, experts = self.gauges.replica_counts()
        return cost_report(router, experts, self.router_price, self.expert_price, self.tokens_per_second(),
                           self.pools)

    def _observe(self, key: str):
        def callback(_options):
            from opentelemetry.metrics import Observation

            value = self.cost()[key]
            return [] if value is None else [Observation(value, self.attrs)]
        return callback

    def _observe_pool_cost(self, _options):
        from opentelemetry.metrics import Observation

        return [Observation(line["dollars_per_hour"], {**self.attrs, "pool": name})
                for name, line in self.cost()["pools"].items() if line["dollars_per_hour"] is not None]

    def _observe_requests(self, _options):
        from opentelemetry.metrics import Observation

        running, waiting = self.gauges.queue_lengths()
        return [Observation(running, {**self.attrs, "state": "running"}),
                Observation(waiting, {**self.attrs, "state": "waiting"})]

    def _observe_kv(self, key: str):
        def callback(_options):
            from opentelemetry.metrics import Observation

            return [Observation(self.gauges.kv_cache_stats()[key], self.attrs)]
        return callback

    def _observe_forecast(self, key: str):
        def callback(_options):
            from opentelemetry.metrics import Observation

            if self.forecast is None:
                return []
            return [Observation(value, {**self.attrs, "group": str(g)})
                    for g, value in enumerate(self.forecast()[key]) if value is not None]
        return callback

    def _observe_replicas(self, _options):
        from opentelemetry.metrics import Observation

        router, experts = self.gauges.replica_counts()
        return [Observation(router, {**self.attrs, "pool": "router"})] + [
            Observation(n, {**self.attrs, "pool": f"group-{g}"}) for g, n in enumerate(experts)]

    def prometheus_text(self) -> bytes:
        from prometheus_client import generate_latest

        with self._scrape_lock:
            return generate_latest()


class GroupTelemetry:
    """An expert-group replica's metrics, over OTLP only (a group serves no HTTP): calls and tokens served
    and the time of each call, per layer."""

    def __init__(self, readers: list, app_name: str, group_name: str):
        self.provider = MeterProvider(metric_readers=readers, resource=tracing.resource("switchyard-experts"))
        meter = self.provider.get_meter("switchyard.experts")
        self.attrs = {"app": app_name, "group": group_name}
        self.seconds = meter.create_histogram("switchyard_group_forward_seconds", unit="s",
                                              description="one call of an expert group (one layer's tokens)",
                                              explicit_bucket_boundaries_advisory=DISPATCH_BUCKETS)
        self.tokens = meter.create_counter("switchyard_group_forward_tokens", unit="{token}",
                                           description="tokens an expert-group replica computed")

    @classmethod
    def if_exported(cls, app_name: str, group_name: str) -> "GroupTelemetry | None":
        readers = tracing.otlp_metric_readers()
        return cls(readers, app_name, group_name) if readers else None

    def on_forward(self, layer: int, num_tokens: int, seconds: float) -> None:
        self.seconds.record(seconds, {**self.attrs, "layer": layer})
        self.tokens.add(num_tokens, self.attrs)
