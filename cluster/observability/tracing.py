"""OpenTelemetry traces, and the OTLP export of metrics, configured the standard way; off by default.

On in a process when an OTLP endpoint is set for traces: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
`OTEL_EXPORTER_OTLP_ENDPOINT` (`switchyard serve --otlp-traces-endpoint`, the app config's
`telemetry.otlp_traces_endpoint` and the Helm value set the first for every replica). Also read:
`OTEL_EXPORTER_OTLP_(TRACES_|METRICS_)PROTOCOL` (`http/protobuf`, the default, or `grpc`),
`OTEL_TRACES_SAMPLER(_ARG)` (default: parent-based, always on), `OTEL_SERVICE_NAME`, `OTEL_BSP_*`, and for
metrics `OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT` and `OTEL_METRIC_EXPORT_INTERVAL` (ms).

Off, `_tracer` is None and every entry point below returns at that test: no span, context or carrier is made.

One request's trace:
    {chat|text_completion} {model}      SERVER span of the HTTP request (W3C `traceparent` honoured)
      ├ switchyard.queue / .prefill / .decode   from the sequence's timestamps, made when it finishes
      └ switchyard.step                 sampled engine steps (one in `trace_steps_every` of its tokens)
          └ switchyard.dispatch         one per MoE layer: groups, replicas, tokens sent
              └ switchyard.expert_group.forward   in the group replica's process
The dispatch span's context rides inside the ExpertRequest (`trace`, a W3C carrier dict), so it reaches the
group with every transport, the compiled graph included, at no extra call: unsampled layers carry None.
A step holds many requests: its span's parent is the first sampled request in it, the others are links.
"""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager
from typing import Mapping

from opentelemetry import trace  # the API only (light); the SDK and exporters load when tracing is turned on
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
PROTOCOLS = ("http/protobuf", "grpc")
_tracer = None  # opentelemetry Tracer when tracing is on in this process
_provider = None


class TelemetryConfigError(ValueError):
    pass


# -- set-up -----------------------------------------------------------------------------------------------
def protocol(signal: str, env: Mapping[str, str] = os.environ) -> str:
    """OTLP protocol for `signal` ("TRACES" or "METRICS"), as the OTel spec reads it."""
    name = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"
    if name not in env:
        name = "OTEL_EXPORTER_OTLP_PROTOCOL"
    value = env.get(name, "http/protobuf").strip()
    if value not in PROTOCOLS:
        raise TelemetryConfigError(f"{name}={value!r}: Switchyard exports OTLP over {' or '.join(PROTOCOLS)}")
    return value


def endpoint_set(signal: str, env: Mapping[str, str] = os.environ) -> bool:
    return bool(env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def resource(service_name: str, env: Mapping[str, str] = os.environ):
    from opentelemetry.sdk.resources import Resource

    # OTEL_SERVICE_NAME, when set, names the service; Resource.create would let the default override it
    return Resource.create({} if env.get("OTEL_SERVICE_NAME") else {"service.name": service_name})


def configure(service_name: str, env: Mapping[str, str] = os.environ) -> bool:
    """Turn tracing on in this process if the environment names an endpoint; True when on."""
    global _tracer, _provider
    if _tracer is not None:
        return True
    if not endpoint_set("TRACES", env):
        return False
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if protocol("TRACES", env) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    provider = TracerProvider(resource=resource(service_name, env))  # the sampler from OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    use(provider)
    return True


def use(provider) -> None:
    """Trace with `provider` (an SDK TracerProvider, e.g. over an in-memory exporter in tests); None: off."""
    global _tracer, _provider
    _provider = provider
    _tracer = None if provider is None else provider.get_tracer("switchyard")


def enabled() -> bool:
    return _tracer is not None


def otlp_metric_readers(env: Mapping[str, str] = os.environ) -> list:
    """A periodic OTLP metric reader when an endpoint is set for metrics (every OTEL_METRIC_EXPORT_INTERVAL)."""
    if not endpoint_set("METRICS", env):
        return []
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    if protocol("METRICS", env) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    return [PeriodicExportingMetricReader(OTLPMetricExporter())]


def traces_endpoint_env(url: str | None, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """`--otlp-traces-endpoint URL` as the standard variable. Over http/protobuf that variable is the full
    URL; a URL with no path gets the signal's path `/v1/traces`, as an OTEL_EXPORTER_OTLP_ENDPOINT would."""
    if not url:
        return {}
    from urllib.parse import urlsplit

    if protocol("TRACES", env) == "http/protobuf" and urlsplit(url).path in ("", "/"):
        url = url.rstrip("/") + "/v1/traces"
    return {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": url}


def replica_env(traces_endpoint: str | None, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What every replica's environment needs for telemetry: the OTEL_* variables of the process that builds
    the app (the CLI's, or the Serve controller's on a cluster), and the configured traces endpoint."""
    out = {k: v for k, v in env.items() if k.startswith("OTEL_")}
    out.update(traces_endpoint_env(traces_endpoint, env))
    if out:
        protocol("TRACES", out), protocol("METRICS", out)  # a bad protocol fails here, at start-up
    return out


# -- the request span (HTTP layer) ------------------------------------------------------------------------
def start_request(headers: Mapping[str, str], operation: str):
    """The SERVER span of one API request, child of the client's `traceparent` if it sent one."""
    if _tracer is None:
        return None
    parent = _propagator.extract(headers)
    return _tracer.start_span(operation, context=parent, kind=SpanKind.SERVER,
                              attributes={"gen_ai.operation.name": operation, "gen_ai.provider.name": "switchyard"})


def request_attributes(span, model: str, max_tokens: int | None, temperature: float, top_p: float) -> None:
    if span is None:
        return
    span.update_name(f"{span.attributes['gen_ai.operation.name']} {model}")
    span.set_attributes({"gen_ai.request.model": model, "gen_ai.request.temperature": temperature,
                         "gen_ai.request.top_p": top_p})
    if max_tokens is not None:
        span.set_attribute("gen_ai.request.max_tokens", max_tokens)


def follow(span, seq) -> None:
    """Let the engine's step spans find the request's trace (when it is sampled)."""
    if span is not None and span.get_span_context().trace_flags.sampled:
        seq.trace = span.get_span_context()


def error_type(error: BaseException | None = None, output=None) -> str | None:
    """The conventions' `error.type` of a request that ended with `error`, or whose output failed; else None."""
    if error is not None:
        return getattr(error, "code", None) or getattr(error, "kind", None) or type(error).__name__
    if output is not None and output.finish_reason == "error":
        return "generation_failed"
    return None


def end_request(span, output=None, seq=None, request_id: str | None = None, model: str | None = None,
                error: BaseException | None = None) -> None:
    """Close the request span: the response's attributes, or the error; queue/prefill/decode from `seq`."""
    if span is None or not span.is_recording():
        return
    if request_id:
        span.set_attribute("gen_ai.response.id", request_id)
    if model:
        span.set_attribute("gen_ai.response.model", model)
    if output is not None:
        span.set_attributes({"gen_ai.usage.input_tokens": output.prompt_tokens,
                             "gen_ai.usage.output_tokens": len(output.token_ids)})
        if output.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [output.finish_reason])
    if seq is not None:
        _phase_spans(span, seq)
    kind = error_type(error, output)
    if kind is not None:
        span.set_attribute("error.type", kind)
        if getattr(error, "status", None):
            span.set_attribute("http.response.status_code", error.status)
        span.set_status(Status(StatusCode.ERROR, str(error) if error is not None else
                               output.error or "generation failed"))
    span.end()


def _phase_spans(parent, seq) -> None:
    """Queue, prefill and decode as children of the request span, from the engine's perf_counter stamps."""
    offset = time.time_ns() - time.perf_counter_ns()  # perf_counter seconds -> epoch nanoseconds

    def ns(t: float) -> int:
        return int(t * 1e9) + offset

    ctx = trace.set_span_in_context(parent)
    end = seq.finish_time or time.perf_counter()
    phases = [("switchyard.queue", seq.arrival_time, seq.scheduled_time, {}),
              ("switchyard.prefill", seq.scheduled_time, seq.first_token_time, {"switchyard.tokens": len(seq.prompt_ids)}),
              ("switchyard.decode", seq.first_token_time, end, {"switchyard.tokens": max(0, len(seq.output_ids) - 1)})]
    for name, start, stop, attributes in phases:
        if start is not None and stop is not None:
            _tracer.start_span(name, context=ctx, start_time=ns(start), attributes=attributes).end(ns(stop))


# -- engine steps and expert dispatch ---------------------------------------------------------------------
class StepTracer:
    """`Engine.step_tracer`: a span around a step that holds a sampled request at one of its sampled tokens
    (its prefill, then every `every`-th token), so per-layer dispatch spans stay a bounded share."""

    def __init__(self, every: int):
        self.every = every

    def __call__(self, scheduled) -> AbstractContextManager | None:
        if _tracer is None:
            return None
        chosen = [s for s in scheduled.seqs if s.trace is not None and len(s.output_ids) % self.every == 0]
        if not chosen:
            return None
        parent = trace.set_span_in_context(trace.NonRecordingSpan(chosen[0].trace))
        links = [trace.Link(s.trace) for s in chosen[1:]]
        return _tracer.start_as_current_span(
            "switchyard.step", context=parent, links=links,
            attributes={"switchyard.step.kind": scheduled.kind, "switchyard.step.seqs": len(scheduled.seqs),
                        "switchyard.step.tokens": scheduled.num_tokens})


def start_dispatch(layer: int, num_tokens: int, tokens_per_group: dict[int, int]):
    """A span for one MoE layer's dispatch, inside a sampled step span; None elsewhere."""
    if _tracer is None:
        return None
    if not trace.get_current_span().is_recording():
        return None
    groups = sorted(tokens_per_group)
    return _tracer.start_span("switchyard.dispatch", attributes={
        "switchyard.layer": layer, "switchyard.tokens": num_tokens, "switchyard.dispatch.groups": groups,
        "switchyard.dispatch.group_tokens": [tokens_per_group[g] for g in groups]})


def carrier(span) -> dict[str, str]:
    """The W3C trace context of `span`, for a message to another process."""
    out: dict[str, str] = {}
    _propagator.inject(out, context=trace.set_span_in_context(span))
    return out


def end_dispatch(span, error: BaseException | None = None) -> None:
    if span is None:
        return
    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(Status(StatusCode.ERROR, str(error)))
    span.end()


def group_span(trace_carrier: dict[str, str] | None, group: str, replica: str, layer: int, num_tokens: int):
    """In an expert-group replica: the span of one call, child of the router's dispatch span."""
    if _tracer is None or trace_carrier is None:
        return None
    parent = _propagator.extract(trace_carrier)
    return _tracer.start_as_current_span("switchyard.expert_group.forward", context=parent, kind=SpanKind.SERVER,
                                         attributes={"switchyard.group": group, "switchyard.replica": replica,
                                                     "switchyard.layer": layer, "switchyard.tokens": num_tokens})
