"""Router metrics through OpenTelemetry, exported in Prometheus format at the router's `/metrics`.

Instruments: generated tokens, step time by kind, expert-dispatch fan-out (groups per token per MoE layer),
tokens sent to each group (per-group load), and the cost per million tokens of the replicas now deployed.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from switchyard.cluster.cost import cost_per_hour, cost_per_million_tokens


class RouterTelemetry:
    def __init__(self, app_name: str, router_price: float = 0.0, expert_price: float = 0.0, window_s: float = 60.0):
        readers = [InMemoryMetricReader()]
        self._prometheus = None
        try:  # Prometheus exposition when the exporter is installed (it is a dependency of switchyard)
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            readers.append(PrometheusMetricReader())
            self._prometheus = True
        except ImportError:
            pass
        self.provider = MeterProvider(metric_readers=readers)
        self.reader = readers[0]
        meter = self.provider.get_meter("switchyard.router")
        self.attrs = {"app": app_name}
        self.tokens = meter.create_counter("switchyard_generated_tokens", unit="tokens")
        self.steps = meter.create_histogram("switchyard_step_seconds", unit="s")
        self.fan_out = meter.create_histogram("switchyard_dispatch_fan_out", unit="groups",
                                              description="expert groups a token is sent to, per MoE layer")
        self.group_tokens = meter.create_counter("switchyard_group_tokens", unit="tokens",
                                                 description="tokens sent to each expert group")
        meter.create_observable_gauge("switchyard_cost_per_million_tokens", callbacks=[self._observe_cost],
                                      unit="USD", description="replica cost per million generated tokens")
        self.router_price, self.expert_price = router_price, expert_price
        self.replicas = lambda: (1, [])  # set by the router: (router replicas, replicas per expert group)
        self._recent: deque[tuple[float, int]] = deque()
        # The engine thread writes the window while the HTTP thread (/metrics, stats, the cost gauge) reads
        # it: iterating a deque that another thread appends to raises "deque mutated during iteration".
        self._recent_lock = threading.Lock()
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

    # -- reading ------------------------------------------------------------------------------------------
    def tokens_per_second(self) -> float:
        with self._recent_lock:
            recent = tuple(self._recent)
        if len(recent) < 2:
            return 0.0
        span = max(recent[-1][0] - recent[0][0], 1e-3)
        return sum(n for _, n in recent) / span

    def cost(self) -> dict:
        router, experts = self.replicas()
        hourly = cost_per_hour(router, experts, self.router_price, self.expert_price)
        return {"dollars_per_hour": hourly, "tokens_per_second": self.tokens_per_second(),
                "cost_per_million_tokens": cost_per_million_tokens(hourly, self.tokens_per_second()),
                "router_replicas": router, "expert_replicas": experts}

    def _observe_cost(self, _options):
        from opentelemetry.metrics import Observation

        value = self.cost()["cost_per_million_tokens"]
        return [] if value is None else [Observation(value, self.attrs)]

    def prometheus_text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest()
