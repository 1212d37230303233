"""Router metrics through OpenTelemetry, exported in Prometheus format at the router's `/metrics`.

Instruments: generated tokens, step time by kind, expert-dispatch fan-out (groups per token per MoE layer),
tokens sent to each group (per-group load), and the live cost of the replicas now deployed ($/hour, output
tokens/s, $ per million tokens; `cluster/cost.py`, absent while a pool is not priced).
"""

from __future__ import annotations

import time
from collections import deque

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from switchyard.cluster.cost import cost_report


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
        meter.create_observable_gauge("switchyard_cost_per_million_tokens", unit="USD",
                                      callbacks=[self._observe("cost_per_million_tokens")],
                                      description="replica cost per million generated tokens")
        meter.create_observable_gauge("switchyard_cost_dollars_per_hour", unit="USD",
                                      callbacks=[self._observe("dollars_per_hour")],
                                      description="cost of the replicas deployed now (absent: not priced)")
        meter.create_observable_gauge("switchyard_output_tokens_per_second", unit="tokens/s",
                                      callbacks=[self._observe("tokens_per_second")])
        self.router_price, self.expert_price = router_price, expert_price
        self.replicas = lambda: (1, [])  # set by the router: (router replicas, replicas per expert group)
        self._recent: deque[tuple[float, int]] = deque()
        self.window_s = window_s

    # -- recording ----------------------------------------------------------------------------------------
    def on_step(self, kind: str, seconds: float, generated: int) -> None:
        self.steps.record(seconds, {**self.attrs, "kind": kind})
        self.tokens.add(generated, self.attrs)
        now = time.monotonic()
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
        recent = tuple(self._recent)  # one copy (atomic): the engine thread appends while HTTP reads
        if len(recent) < 2:
            return 0.0
        span = max(recent[-1][0] - recent[0][0], 1e-3)
        return sum(n for _, n in recent) / span

    def cost(self) -> dict:
        router, experts = self.replicas()
        return cost_report(router, experts, self.router_price, self.expert_price, self.tokens_per_second())

    def _observe(self, key: str):
        def callback(_options):
            from opentelemetry.metrics import Observation

            value = self.cost()[key]
            return [] if value is None else [Observation(value, self.attrs)]
        return callback

    def prometheus_text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest()
