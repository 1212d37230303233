"""Traces and GenAI metrics in-process (no Ray): the SDK's in-memory span exporter and metric reader see a
request's server span, its queue/prefill/decode children, sampled step spans, per-layer dispatch spans and
the expert groups' spans under them, with attribute values equal to what was sent and received."""

import asyncio
import pickle

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from switchyard.cluster.observability import tracing
from switchyard.cluster.deployments.expert_group import ExpertGroupServer
from switchyard.cluster.dispatch.placement_tables import GroupChooser, load_placement
from switchyard.cluster.api.openai_routes import ServedModel, build_openai_app
from switchyard.cluster.dispatch.remote_experts import RemoteExperts
from switchyard.cluster.observability.telemetry import RouterTelemetry
from switchyard.configs.engine import EngineConfig
from switchyard.experts.checkpoint import Checkpoint
from switchyard.router.async_engine import AsyncEngine
from switchyard.router.engine import Engine

MODEL = "tiny"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
STEPS_EVERY = 4


class InProcessGroups:
    """A transport to expert-group servers in this process; messages are pickled as across processes."""

    def __init__(self, servers):
        self.servers = servers
        self.traces = []  # the trace carrier of every request sent

    def send(self, requests):
        self.traces += [r.trace for r in requests.values()]
        return {g: self.servers[g].forward(pickle.loads(pickle.dumps(r))) for g, r in requests.items()}

    def receive(self, responses):
        return responses

    def called(self, responses):
        return {g: [self.servers[g].replica_id] for g in responses}


@pytest.fixture(scope="module")
def served(checkpoints):
    path = checkpoints["qwen3_moe"]
    ckpt = Checkpoint.open(path)
    placement = load_placement(None, ckpt.config, 2)
    servers = [ExpertGroupServer(str(path), placement.experts_of_group(g)) for g in range(2)]
    for g, server in enumerate(servers):
        server.group_name, server.replica_id = f"group-{g}", f"replica-{g}"
    transport = InProcessGroups(servers)
    telemetry = RouterTelemetry("test")
    experts = RemoteExperts(GroupChooser(placement), transport, 2, on_dispatch=telemetry.on_dispatch,
                            on_layer_done=telemetry.on_layer_done)
    engine = Engine.from_checkpoint(ckpt, EngineConfig(max_num_seqs=4, max_model_len=128), experts)
    engine.step_tracer = tracing.StepTracer(STEPS_EVERY)
    app = build_openai_app()
    app.state.served = ServedModel(MODEL, AsyncEngine(engine), 128, 0, telemetry=telemetry)
    yield app, telemetry, transport
    app.state.served.engine.shutdown()


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)


def post(app, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            return await http.post(path, json=body, headers=headers or {})

    return asyncio.run(go())


def by_name(finished, name: str) -> list:
    return [s for s in finished if s.name == name]


def metric_points(telemetry: RouterTelemetry, name: str) -> list:
    data = telemetry.reader.get_metrics_data()
    return [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics if m.name == name
            for p in m.data.data_points]


def test_a_completion_is_one_trace_from_the_client_to_the_expert_groups(served, spans):
    app, telemetry, transport = served
    before = len(metric_points(telemetry, "gen_ai.server.request.duration"))
    response = post(app, "/v1/completions", {"model": MODEL, "prompt": "The yard", "max_tokens": 10,
                                             "temperature": 0.0, "top_p": 0.9}, {"traceparent": TRACEPARENT})
    assert response.status_code == 200
    body = response.json()
    finished = spans.get_finished_spans()
    assert {format(s.context.trace_id, "032x") for s in finished} == {TRACE_ID}  # one trace, the client's

    (server,) = by_name(finished, f"text_completion {MODEL}")
    assert server.kind == SpanKind.SERVER and format(server.parent.span_id, "016x") == PARENT_ID
    assert dict(server.attributes) == {
        "gen_ai.operation.name": "text_completion", "gen_ai.provider.name": "switchyard",
        "gen_ai.request.model": MODEL, "gen_ai.request.max_tokens": 10, "gen_ai.request.temperature": 0.0,
        "gen_ai.request.top_p": 0.9, "gen_ai.response.id": body["id"], "gen_ai.response.model": MODEL,
        "gen_ai.usage.input_tokens": body["usage"]["prompt_tokens"],
        "gen_ai.usage.output_tokens": body["usage"]["completion_tokens"],
        "gen_ai.response.finish_reasons": (body["choices"][0]["finish_reason"],)}
    assert server.status.status_code == StatusCode.UNSET

    phases = [by_name(finished, f"switchyard.{p}")[0] for p in ("queue", "prefill", "decode")]
    assert all(p.parent.span_id == server.context.span_id for p in phases)
    assert server.start_time <= phases[0].start_time <= phases[0].end_time <= phases[1].start_time + 1000
    assert phases[1].end_time <= phases[2].start_time + 1000 and phases[2].end_time <= server.end_time
    assert phases[1].attributes["switchyard.tokens"] == body["usage"]["prompt_tokens"]
    assert phases[2].attributes["switchyard.tokens"] == body["usage"]["completion_tokens"] - 1

    # prefill (token 0), then tokens 4 and 8 of the 10: 3 sampled steps, each with a dispatch per MoE layer
    steps = by_name(finished, "switchyard.step")
    assert len(steps) == len(range(0, body["usage"]["completion_tokens"], STEPS_EVERY))
    assert all(s.parent.span_id == server.context.span_id for s in steps)
    assert steps[0].attributes["switchyard.step.kind"] == "prefill"
    assert steps[0].attributes["switchyard.step.tokens"] == body["usage"]["prompt_tokens"]
    dispatches = by_name(finished, "switchyard.dispatch")
    step_ids = {s.context.span_id for s in steps}
    assert len(dispatches) == 3 * len(steps) and all(d.parent.span_id in step_ids for d in dispatches)
    groups = by_name(finished, "switchyard.expert_group.forward")
    for d in dispatches:
        children = [g for g in groups if g.parent.span_id == d.context.span_id]
        assert sorted(g.attributes["switchyard.group"] for g in children) == [
            f"group-{g}" for g in d.attributes["switchyard.dispatch.groups"]]
        for child in children:
            index = d.attributes["switchyard.dispatch.groups"].index(int(child.attributes["switchyard.group"][-1]))
            assert child.attributes["switchyard.tokens"] == d.attributes["switchyard.dispatch.group_tokens"][index]
            assert child.attributes["switchyard.layer"] == d.attributes["switchyard.layer"]
        assert sorted(d.attributes["switchyard.dispatch.replicas"]) == [
            f"{g}:replica-{g}" for g in d.attributes["switchyard.dispatch.groups"]]
    assert sum(t is not None for t in transport.traces) == sum(len(d.attributes["switchyard.dispatch.groups"])
                                                               for d in dispatches)

    # the same request in the GenAI metrics
    attrs = {"app": "test", "gen_ai.operation.name": "text_completion", "gen_ai.request.model": MODEL,
             "gen_ai.provider.name": "switchyard"}
    durations = metric_points(telemetry, "gen_ai.server.request.duration")
    assert len(durations) == before + 1 or durations[0].count >= 1
    (duration,) = [p for p in durations if dict(p.attributes) == attrs]
    assert duration.count >= 1 and 0 < duration.sum
    usage = {p.attributes["gen_ai.token.type"]: p for p in metric_points(telemetry, "gen_ai.server.token.usage")}
    assert usage["input"].max == body["usage"]["prompt_tokens"]
    assert usage["output"].max == body["usage"]["completion_tokens"]
    (ttft,) = metric_points(telemetry, "gen_ai.server.time_to_first_token")
    assert 0 < ttft.min <= duration.sum
    (tpot,) = metric_points(telemetry, "gen_ai.server.time_per_output_token")
    assert tpot.count >= 1 and tpot.explicit_bounds[0] == 0.01
    layers = {p.attributes["layer"] for p in metric_points(telemetry, "switchyard_dispatch_seconds")}
    assert layers == {0, 1, 2}


def test_a_streamed_chat_is_traced_until_its_last_chunk(served, spans):
    app, _, _ = served
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Which cars?"}], "max_tokens": 6,
            "stream": True, "stream_options": {"include_usage": True}}
    response = post(app, "/v1/chat/completions", body)
    assert response.status_code == 200
    chunks = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert chunks[-1] == "[DONE]"
    import json

    usage = json.loads(chunks[-2])["usage"]
    finish = [json.loads(c)["choices"][0]["finish_reason"] for c in chunks[:-2]][-1]
    (server,) = by_name(spans.get_finished_spans(), f"chat {MODEL}")
    assert server.parent is None  # no traceparent: a new trace
    assert server.attributes["gen_ai.operation.name"] == "chat"
    assert server.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert server.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert server.attributes["gen_ai.response.finish_reasons"] == (finish,)
    assert server.attributes["gen_ai.request.max_tokens"] == 6


@pytest.mark.parametrize("body,status,error_type", [
    ({"model": "other", "prompt": "x"}, 404, "model_not_found"),
    ({"model": MODEL, "prompt": "x", "top_p": 3}, 400, "invalid_request_error"),
])
def test_a_refused_request_sets_the_span_status_and_error_type(served, spans, body, status, error_type):
    app, telemetry, _ = served
    response = post(app, "/v1/completions", body, {"traceparent": TRACEPARENT})
    assert response.status_code == status
    (server,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert server.status.status_code == StatusCode.ERROR
    assert server.attributes["error.type"] == error_type
    assert server.attributes["http.response.status_code"] == status
    failed = [p for p in metric_points(telemetry, "gen_ai.server.request.duration")
              if p.attributes.get("error.type") == error_type]
    assert failed and failed[0].count >= 1


def test_with_tracing_off_no_span_and_no_trace_context_is_made(served):
    app, _, transport = served
    assert not tracing.enabled()
    transport.traces.clear()
    response = post(app, "/v1/completions", {"model": MODEL, "prompt": "yard", "max_tokens": 5},
                    {"traceparent": TRACEPARENT})
    assert response.status_code == 200 and transport.traces and set(transport.traces) == {None}


def test_otlp_settings_from_the_standard_variables():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRIC_EXPORT_INTERVAL": "500", "HOME": "/x"}
    assert tracing.endpoint_set("TRACES", env) and tracing.endpoint_set("METRICS", env)
    assert not tracing.endpoint_set("TRACES", {})
    assert tracing.replica_env(None, env) == {k: v for k, v in env.items() if k.startswith("OTEL_")}
    assert tracing.replica_env("http://c:4318", {}) == {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}
    assert tracing.replica_env("http://c:4318/x", {}) == {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/x"}
    grpc = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert tracing.replica_env("http://c:4317", grpc)["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://c:4317"
    assert tracing.protocol("TRACES", {**grpc, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}) == "http/protobuf"
    with pytest.raises(tracing.TelemetryConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        tracing.replica_env(None, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
