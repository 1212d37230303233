"""End to end on the local Ray: a served request's spans and metrics reach an OTLP/HTTP receiver from the
router and from the expert groups, in the client's trace. The receiver is a few lines of `http.server`
decoding opentelemetry-proto messages (no collector binary here). The OTEL_* variables are set in this
process before the app is built: build_app hands them to every replica."""

import gzip
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (ExportMetricsServiceRequest,
                                                                          ExportMetricsServiceResponse)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)
from ray import serve

from switchyard.cluster.app import build_app
from test_cluster import MODEL, app_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


class OtlpReceiver:
    """Collects what OTLP/HTTP exporters post: spans by service, metric names by service."""

    def __init__(self):
        self.spans: dict[str, list] = defaultdict(list)  # service.name -> [Span]
        self.metrics: dict[str, set[str]] = defaultdict(set)  # service.name -> metric names
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    receiver.add_traces(ExportTraceServiceRequest.FromString(body))
                    reply = ExportTraceServiceResponse()
                elif self.path == "/v1/metrics":
                    receiver.add_metrics(ExportMetricsServiceRequest.FromString(body))
                    reply = ExportMetricsServiceResponse()
                else:
                    self.send_error(404)
                    return
                payload = reply.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def service(resource) -> str:
        return next((a.value.string_value for a in resource.attributes if a.key == "service.name"), "")

    def add_traces(self, request):
        with self.lock:
            for rs in request.resource_spans:
                self.spans[self.service(rs.resource)] += [s for ss in rs.scope_spans for s in ss.spans]

    def add_metrics(self, request):
        with self.lock:
            for rm in request.resource_metrics:
                self.metrics[self.service(rm.resource)] |= {m.name for sm in rm.scope_metrics for m in sm.metrics}

    def in_trace(self, service: str, trace_id: str) -> list:
        with self.lock:
            return [s for s in self.spans[service] if s.trace_id.hex() == trace_id]

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver(monkeypatch):
    r = OtlpReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "500")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
    yield r
    r.close()


def wait_for(condition, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.25)
    return condition()


@pytest.mark.parametrize("transport", ["actor", "compiled", "socket"])
def test_a_served_request_is_one_trace_across_router_and_expert_groups(ray_serve, checkpoints, receiver, transport):
    config = app_config(checkpoints["qwen3_moe"], 2, transport) | {"name": f"otel-{transport}"}
    config["telemetry"] = {"trace_steps_every": 2}
    serve.run(build_app(config), name=config["name"], route_prefix=f"/{config['name']}")
    try:
        r = httpx.post(f"{ray_serve}/{config['name']}/v1/completions", timeout=120,
                       headers={"traceparent": TRACEPARENT},
                       json={"model": MODEL, "prompt": "The yard", "max_tokens": 6, "temperature": 0})
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        groups_seen = lambda: {s.name for s in receiver.in_trace("switchyard-experts", TRACE_ID)}  # noqa: E731
        assert wait_for(lambda: "switchyard.expert_group.forward" in groups_seen()), dict(receiver.spans)
        assert wait_for(lambda: {"gen_ai.server.request.duration", "switchyard_dispatch_seconds"}
                        <= receiver.metrics["switchyard-router"]), dict(receiver.metrics)
        assert wait_for(lambda: "switchyard_group_forward_seconds" in receiver.metrics["switchyard-experts"])
        router = receiver.in_trace("switchyard-router", TRACE_ID)
        (server,) = [s for s in router if s.name == f"text_completion {MODEL}"]
        assert server.parent_span_id.hex() == TRACEPARENT.split("-")[2]
        attrs = {a.key: a.value for a in server.attributes}
        assert attrs["gen_ai.usage.output_tokens"].int_value == usage["completion_tokens"]
        assert attrs["gen_ai.usage.input_tokens"].int_value == usage["prompt_tokens"]
        dispatch_ids = {s.span_id for s in router if s.name == "switchyard.dispatch"}
        forwards = [s for s in receiver.in_trace("switchyard-experts", TRACE_ID)
                    if s.name == "switchyard.expert_group.forward"]
        assert dispatch_ids and forwards and all(s.parent_span_id in dispatch_ids for s in forwards)
        groups = {a.value.string_value for s in forwards for a in s.attributes if a.key == "switchyard.group"}
        assert groups == {f"{config['name']}-experts-0", f"{config['name']}-experts-1"}
    finally:
        serve.delete(config["name"])
