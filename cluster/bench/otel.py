"""What the OpenTelemetry hooks cost one MoE layer's dispatch: tracing off, on with the step not sampled,
and a sampled layer (span, W3C carrier for the group, end; batch export to memory, as served)."""

from __future__ import annotations

import timeit

from switchyard.cluster.bench.table import format_table
from switchyard.cluster.observability import tracing


def run(repeats: int = 200_000) -> list[list]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    groups = {0: 2, 1: 2}

    def per_call(fn, number: int) -> float:
        return min(timeit.repeat(fn, number=number, repeat=3)) / number - min(
            timeit.repeat(lambda: None, number=number, repeat=3)) / number

    def sampled_layer():
        span = tracing.start_dispatch(0, 4, groups)
        tracing.carrier(span)
        tracing.end_dispatch(span)

    was = tracing._provider
    try:
        tracing.use(None)
        off = per_call(lambda: tracing.start_dispatch(0, 4, groups), repeats)
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
        tracing.use(provider)
        unsampled = per_call(lambda: tracing.start_dispatch(0, 4, groups), repeats)
        with provider.get_tracer("bench").start_as_current_span("step"):
            sampled = per_call(sampled_layer, max(1, repeats // 20))
        provider.shutdown()
    finally:
        tracing.use(was)
    return [["tracing off", off * 1e6], ["on, step not sampled", unsampled * 1e6],
            ["on, sampled layer (span + carrier + end)", sampled * 1e6]]


def register(benchmarks) -> None:
    """Add `switchyard bench otel` to the `bench` subparsers."""
    p = benchmarks.add_parser("otel", help="per-layer cost of the OpenTelemetry dispatch hooks: off, unsampled, sampled")
    p.add_argument("--repeats", type=int, default=200_000)
    p.set_defaults(func=main)


def main(args) -> int:

    print(format_table(["per MoE layer", "us"], run(args.repeats)))
    return 0
