"""Every response body, streamed chunk and error body of the OpenAI API against the schemas of OpenAI's published
OpenAPI document (tests/openai_spec.py: the schemas and the commit they come from).

Where OpenAI's own API is knowingly looser than its spec, the place is named (`Looser` in tests/openai_spec.py)
and let through only where a test passes it; everything else must fit the schema exactly. Requests are checked
against the spec's request schemas too, so a test never leans on something OpenAI's API would refuse.

Runs the built-in model (configs/demo-model: a byte-level BPE tokenizer, so "東京" is six one-byte tokens,
none a character of its own) in-process, without Ray.
"""

import asyncio
import codecs
import re

import httpx
import pytest

from openai_spec import (ECHO_FIRST_TOKEN, SCHEMAS, SPEC, STREAMED_FINISH_REASON, nullable_properties, sse_events,
                         validator, violations)
from served_app import served_app
from switchyard.cluster.api.openai_routes import build_openai_app
from switchyard.cluster.api.nullable import CHAT_MESSAGE_NULLABLE, CHAT_NULLABLE, COMPLETION_NULLABLE
from switchyard.configs.defaults import DEMO_MODEL_DIR
from switchyard.router import engine as engine_module

MODEL = "demo-model"
MAX_NUM_SEQS = 8
UNICODE = "café — 東京"
VLLM_EXTRAS = {"ignore_eos", "top_k"}  # vLLM's parameters, not OpenAI's: left out of the request check


@pytest.fixture(scope="module")
def app():
    with served_app(DEMO_MODEL_DIR, MODEL, max_num_seqs=MAX_NUM_SEQS, max_model_len=256, max_waiting_requests=0,
                    max_request_bytes=16384) as app:
        yield app


def send(app, method: str, path: str, **kwargs) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.request(method, path, **kwargs)

    return asyncio.run(go())


def post(app, path: str, body: dict) -> httpx.Response:
    request_schema = "CreateChatCompletionRequest" if "chat" in path else "CreateCompletionRequest"
    assert violations({k: v for k, v in body.items() if k not in VLLM_EXTRAS}, request_schema) == []
    return send(app, "POST", path, json=body)


def test_the_schemas_name_their_source():
    source = SPEC["x-source"]
    assert source["repository"] == "https://github.com/openai/openai-openapi"
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"]) and source["file"] == "openapi.yaml"
    for name in ("CreateCompletionResponse", "CreateChatCompletionResponse", "CreateChatCompletionStreamResponse",
                 "ErrorResponse", "CreateCompletionRequest", "CreateChatCompletionRequest", "ListModelsResponse"):
        validator(name).check_schema(validator(name).schema)


def test_the_looser_places_are_needed():
    """Each place let through is one the strict spec refuses: none of them is a check switched off for nothing."""
    chunk = {"id": "x", "object": "text_completion", "created": 0, "model": MODEL,
             "choices": [{"index": 0, "text": "a", "logprobs": None, "finish_reason": None}]}
    assert violations(chunk, "CreateCompletionResponse") != []
    assert violations(chunk, "CreateCompletionResponse", (STREAMED_FINISH_REASON,)) == []
    chunk["choices"][0].update(finish_reason="length", logprobs={
        "tokens": ["a", "b"], "token_logprobs": [None, -1.0], "top_logprobs": [None, {"b": -1.0}],
        "text_offset": [0, 1]})
    assert violations(chunk, "CreateCompletionResponse") != []
    assert violations(chunk, "CreateCompletionResponse", (ECHO_FIRST_TOKEN,)) == []
    chunk["choices"][0]["logprobs"]["token_logprobs"][1] = None  # only the first token may lack a logprob
    assert violations(chunk, "CreateCompletionResponse", (ECHO_FIRST_TOKEN,)) != []


def test_null_means_not_given_for_exactly_the_fields_the_spec_makes_nullable():
    message = {"role": "user", "content": "x"}
    assert COMPLETION_NULLABLE == nullable_properties("CreateCompletionRequest", {"model": MODEL, "prompt": "x"})
    assert CHAT_NULLABLE == nullable_properties("CreateChatCompletionRequest", {"model": MODEL,
                                                                                "messages": [message]})
    kinds = [kind["$ref"].rsplit("/", 1)[1] for kind in SCHEMAS["ChatCompletionRequestMessage"]["oneOf"]]
    assert CHAT_MESSAGE_NULLABLE == set().union(*(
        nullable_properties(kind, {"role": SCHEMAS[kind]["properties"]["role"]["enum"][0], "content": "x",
                                   "name": "x", "tool_call_id": "x"}) for kind in kinds))


COMPLETIONS = {
    "plain": {"prompt": "The history of", "max_tokens": 6},
    "n, several prompts, stop": {"prompt": ["The railway", "A yard"], "n": 2, "max_tokens": 12, "seed": 3,
                                 "stop": [" the", "."]},
    "token ids": {"prompt": [71, 1919, 1440], "max_tokens": 4, "temperature": 0},
    "logprobs, echo": {"prompt": "The history of", "max_tokens": 5, "logprobs": 3, "echo": True, "n": 2,
                       "seed": 1},
    "scoring a prompt": {"prompt": UNICODE, "max_tokens": 0, "echo": True, "logprobs": 2},
    "unicode, logprobs": {"prompt": UNICODE, "max_tokens": 8, "logprobs": 5, "temperature": 1.5, "seed": 0},
}
CHATS = {
    "plain": {"max_tokens": 6},
    "n, logprobs, stop": {"max_tokens": 10, "n": 2, "seed": 2, "logprobs": True, "top_logprobs": 3,
                          "stop": ["."]},
    # greedy, the model answers this prompt in two-byte characters split over two tokens each
    "unicode, logprobs": {"max_tokens": 10, "logprobs": True, "top_logprobs": 20, "temperature": 0},
}
STREAMS = {"whole": {}, "streamed": {"stream": True},
           "streamed with usage": {"stream": True, "stream_options": {"include_usage": True}}}


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("case", COMPLETIONS)
def test_completions_fit_the_spec(app, case, stream):
    body = {"model": MODEL, **COMPLETIONS[case], **STREAMS[stream]}
    response = post(app, "/v1/completions", body)
    assert response.status_code == 200, response.text
    if not body.get("stream"):
        assert violations(response.json(), "CreateCompletionResponse", (ECHO_FIRST_TOKEN,)) == []
        return
    chunks = sse_events(response.text)
    for chunk in chunks:
        assert violations(chunk, "CreateCompletionResponse", (ECHO_FIRST_TOKEN, STREAMED_FINISH_REASON)) == []
    assert ("usage" in chunks[-1]) == bool(body.get("stream_options"))


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("case", CHATS)
def test_chat_completions_fit_the_spec(app, case, stream):
    prompt = UNICODE if "unicode" in case else "Tell me about railway yards."
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], **CHATS[case], **STREAMS[stream]}
    response = post(app, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    if not body.get("stream"):
        assert violations(response.json(), "CreateChatCompletionResponse") == []
        return
    chunks = sse_events(response.text)
    for chunk in chunks:
        assert violations(chunk, "CreateChatCompletionStreamResponse") == []
    assert chunks[-1]["choices"] == [] if body.get("stream_options") else chunks[-1]["choices"]


def test_the_model_list_fits_the_spec(app):
    assert violations(send(app, "GET", "/v1/models").json(), "ListModelsResponse") == []


def test_an_assistant_message_given_back_as_the_api_returned_it_is_accepted(app):
    """The answer's `message` (with `refusal: null`, as the spec requires it) sent back in the next request."""
    first = post(app, "/v1/chat/completions", {"model": MODEL, "max_tokens": 4,
                                               "messages": [{"role": "user", "content": "Hello"}]}).json()
    message = first["choices"][0]["message"]
    assert message["refusal"] is None
    history = [{"role": "user", "content": "Hello"}, {**message, "audio": None, "function_call": None},
               {"role": "user", "content": "And then?"}]
    assert post(app, "/v1/chat/completions", {"model": MODEL, "max_tokens": 4, "messages": history}).status_code == 200


@pytest.mark.parametrize("field", sorted(COMPLETION_NULLABLE))
def test_a_null_completions_field_is_one_not_given(app, field):
    body = {"model": MODEL, "prompt": "The", "max_tokens": 3, "ignore_eos": True, field: None}
    response = post(app, "/v1/completions", body)
    if field == "prompt":  # required: not given is a 400 naming it
        assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"
        assert violations(response.json(), "ErrorResponse") == []
        return
    assert response.status_code == 200, response.text
    answer = response.json()
    assert violations(answer, "CreateCompletionResponse") == []
    assert len(answer["choices"]) == 1 and answer["choices"][0]["logprobs"] is None
    assert answer["usage"]["completion_tokens"] == (16 if field == "max_tokens" else 3)  # the spec's default: 16


@pytest.mark.parametrize("field", sorted(CHAT_NULLABLE))
def test_a_null_chat_field_is_one_not_given(app, field):
    limit = "max_completion_tokens" if field == "max_tokens" else "max_tokens"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], limit: 3, "ignore_eos": True,
            field: None}
    response = post(app, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert violations(answer, "CreateChatCompletionResponse") == []
    assert len(answer["choices"]) == 1 and answer["choices"][0]["logprobs"] is None
    assert answer["usage"]["completion_tokens"] == 3


# -- logprobs of tokens that are part of a character ------------------------------------------------------
def test_a_tokens_bytes_are_its_own_in_the_whole_vocabulary(app):
    tokenizer = app.state.served.engine.engine.tokenizer
    text = f"<|im_start|>{UNICODE} ŷ"
    ids = tokenizer.encode(text)
    assert b"".join(tokenizer.token_bytes(i) for i in ids) == text.encode("utf-8")
    partial = 0
    for token in range(tokenizer.vocab_size):
        data = tokenizer.token_bytes(token)
        try:
            assert data.decode("utf-8") == tokenizer.decode([token], skip_special_tokens=False)
        except UnicodeDecodeError:
            partial += 1
    assert partial > 100  # the byte-level vocabulary's lone bytes past ASCII, at least


def token_bytes(token: str) -> bytes:
    """A completions token's bytes: its text, or the `bytes:\\xNN...` a token that is no whole character is."""
    if token.startswith("bytes:"):
        return codecs.escape_decode(token[len("bytes:"):])[0]
    return token.encode("utf-8")


def char_offset(data: bytes, start: int) -> int:
    """The character that byte `start` of valid UTF-8 `data` belongs to."""
    return len(data[:start].decode("utf-8", errors="ignore"))


def check_completion_logprobs(text: str, logprobs: dict) -> None:
    data = b"".join(token_bytes(t) for t in logprobs["tokens"])
    assert data.decode("utf-8", errors="replace") == text
    starts = [0]
    for token in logprobs["tokens"][:-1]:
        starts.append(starts[-1] + len(token_bytes(token)))
    assert logprobs["text_offset"] == [char_offset(data, s) for s in starts]
    for token, logprob, top in zip(logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"]):
        if top is not None:  # the chosen token under its own text, with its own logprob
            assert top[token] == logprob


def test_completion_logprobs_of_partial_characters(app):
    scored = post(app, "/v1/completions", {"model": MODEL, "prompt": UNICODE, "max_tokens": 0, "echo": True,
                                           "logprobs": 2}).json()["choices"][0]
    tokens = scored["logprobs"]["tokens"]
    assert scored["text"] == UNICODE and sum(t.startswith("bytes:") for t in tokens) == 6  # 東 and 京: 3 + 3
    check_completion_logprobs(UNICODE, scored["logprobs"])
    assert all(len(top) in (2, 3) for top in scored["logprobs"]["top_logprobs"][1:])

    body = {"model": MODEL, "prompt": UNICODE, "max_tokens": 12, "echo": True, "logprobs": 3, "temperature": 0}
    whole = post(app, "/v1/completions", body).json()["choices"][0]
    check_completion_logprobs(whole["text"], whole["logprobs"])
    chunks = sse_events(post(app, "/v1/completions", {**body, "stream": True}).text)
    streamed = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for chunk in chunks:
        for key in streamed:
            streamed[key] += (chunk["choices"][0]["logprobs"] or {}).get(key, [])
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["text"]
    assert streamed["tokens"] == whole["logprobs"]["tokens"]
    assert streamed["text_offset"] == whole["logprobs"]["text_offset"]


def test_chat_logprob_bytes_are_the_tokens_own(app):
    body = {"model": MODEL, "messages": [{"role": "user", "content": UNICODE}], **CHATS["unicode, logprobs"]}
    choice = post(app, "/v1/chat/completions", body).json()["choices"][0]
    content = choice["logprobs"]["content"]
    joined = b"".join(bytes(entry["bytes"]) for entry in content)
    assert joined.decode("utf-8", errors="replace") == choice["message"]["content"]
    entries = content + [top for entry in content for top in entry["top_logprobs"]]
    partial = 0
    for entry in entries:
        data = bytes(entry["bytes"])
        try:
            assert entry["token"] == data.decode("utf-8")
        except UnicodeDecodeError:  # part of a character: named by its bytes
            partial += 1
            assert entry["token"] == "bytes:" + "".join(f"\\x{b:02x}" for b in data)
    assert partial, "no token here is part of a character: the test checks nothing; change the prompt"


# -- errors -----------------------------------------------------------------------------------------------
def chat(content="Hi", **fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}


ERRORS = {
    "malformed json": ("POST", "/v1/completions", {"content": b'{"model": '}, 400),
    "wrong type": ("POST", "/v1/completions", {"json": {"model": MODEL, "prompt": "x", "n": "2"}}, 400),
    "unsupported parameter": ("POST", "/v1/chat/completions", {"json": chat(tools=[{"type": "function"}])}, 400),
    "unknown parameter": ("POST", "/v1/chat/completions", {"json": chat(frobnicate=1)}, 400),
    "null where the spec has none": ("POST", "/v1/chat/completions", {"json": {**chat(), "model": None}}, 400),
    "out of range": ("POST", "/v1/completions", {"json": {"model": MODEL, "prompt": "x", "top_p": 3}}, 400),
    "context length": ("POST", "/v1/completions", {"json": {"model": MODEL, "prompt": "x", "max_tokens": 999}},
                       400),
    "unknown model": ("POST", "/v1/chat/completions", {"json": {**chat(), "model": "gpt-9"}}, 404),
    "unknown route": ("GET", "/v1/engines", {}, 404),
    "wrong method": ("GET", "/v1/completions", {}, 405),
    "body too large": ("POST", "/v1/completions", {"json": {"model": MODEL, "prompt": "x" * 20000}}, 413),
}


@pytest.mark.parametrize("case", ERRORS)
def test_error_bodies_fit_the_spec(app, case):
    method, path, kwargs, status = ERRORS[case]
    response = send(app, method, path, **kwargs)
    assert response.status_code == status, response.text
    assert violations(response.json(), "ErrorResponse") == []


def test_key_loading_and_unexpected_errors_fit_the_spec(app):
    app.state.api_keys = ("right",)
    try:
        refused = send(app, "POST", "/v1/completions", json={"model": MODEL, "prompt": "x"},
                       headers={"authorization": "Bearer wrong"})
    finally:
        app.state.api_keys = ()
    loading = send(build_openai_app(), "POST", "/v1/completions", json={"model": MODEL, "prompt": "x"})
    broken = build_openai_app()
    broken.state.served = type("Broken", (), {"name": MODEL, "max_request_bytes": None, "telemetry": None})()
    unexpected = send(broken, "POST", "/v1/chat/completions", json=chat())
    for response, status in ((refused, 401), (loading, 503), (unexpected, 500)):
        assert response.status_code == status, response.text
        assert violations(response.json(), "ErrorResponse") == []


def test_at_capacity_fits_the_spec(app):
    engine = app.state.served.engine

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            full = asyncio.create_task(http.post("/v1/completions", json={
                "model": MODEL, "prompt": "The", "n": MAX_NUM_SEQS, "max_tokens": 64, "ignore_eos": True}))
            while engine.num_unfinished < MAX_NUM_SEQS:
                await asyncio.sleep(0.01)
            refused = await http.post("/v1/completions", json={"model": MODEL, "prompt": "x"})
            return refused, await full

    refused, full = asyncio.run(go())
    assert refused.status_code == 429 and full.status_code == 200
    assert violations(refused.json(), "ErrorResponse") == []


def test_a_failed_generation_fits_the_spec_whole_and_streamed(app, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("an expert group is unreachable")

    monkeypatch.setattr(engine_module, "forward_step", fail)
    whole = post(app, "/v1/chat/completions", chat(max_tokens=4))
    assert whole.status_code == 503 and violations(whole.json(), "ErrorResponse") == []
    events = sse_events(post(app, "/v1/chat/completions", chat(max_tokens=4, stream=True)).text)
    assert "error" in events[-1] and violations(events[-1], "ErrorResponse") == []
    for chunk in events[:-1]:
        assert violations(chunk, "CreateChatCompletionStreamResponse") == []
