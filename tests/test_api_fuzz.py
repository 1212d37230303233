"""Fuzzing the served OpenAPI schema with schemathesis: whatever it sends, no 5xx, and every 4xx an OpenAI
error object. Bounded: a fixed number of examples per operation, on the in-process app."""

import json
from collections import defaultdict

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from served_app import served_app

MODEL = "tiny"
EXAMPLES = 40


@pytest.fixture(scope="module")
def app(checkpoints):
    with served_app(checkpoints["qwen3_moe"], MODEL, max_num_seqs=4, max_model_len=64,
                    max_waiting_requests=64, max_request_bytes=1 << 16) as app:
        openapi = app.openapi

        def served_model_only():
            # `model` as the served name: a random string would stop nearly every request at the 404
            schema = openapi()
            for path in ("/v1/completions", "/v1/chat/completions"):
                body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
                body["properties"]["model"] = {"type": "string", "enum": [MODEL]}
            return schema

        app.openapi = served_model_only
        yield app


def check_response(response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = json.loads(response.text)["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], response.text


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzz_the_served_schema(app, mode):
    """positive: bodies the schema allows (values past the engine's own bounds among them); negative: bodies
    it does not (wrong types, missing fields, out-of-range numbers)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health"}
    statuses = defaultdict(list)
    for operation in operations:
        if mode == "negative" and operation.method.upper() == "GET":
            continue  # nothing to send wrong: no parameters
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(GenerationMode(mode)))
        def run(case):
            response = case.call()
            check_response(response)
            statuses[operation.path].append(response.status_code)

        run()
    generated = statuses["/v1/completions"] + statuses["/v1/chat/completions"]
    assert 400 in generated  # the fuzzing reached the parsing...
    if mode == "positive":
        assert 200 in generated  # ...and, with bodies the schema allows, the engine
