"""The OpenAI-compatible API in-process (no Ray): shapes, streaming, and errors."""

import asyncio
import json

import httpx
import openai
import pytest

from switchyard.cluster.api.openai_routes import ServedModel, build_openai_app
from switchyard.configs.engine import EngineConfig
from switchyard.router.async_engine import AsyncEngine
from switchyard.router.engine import Engine
from switchyard.router.sampling import SamplingParams

MODEL = "tiny-qwen3"


@pytest.fixture(scope="module")
def served(checkpoints):
    engine = Engine.from_pretrained(checkpoints["qwen3_moe"], EngineConfig(max_num_seqs=4, max_model_len=128))
    reference = Engine.from_pretrained(checkpoints["qwen3_moe"], EngineConfig(max_num_seqs=4, max_model_len=128))
    app = build_openai_app()
    app.state.served = ServedModel(MODEL, AsyncEngine(engine), 128)
    yield app, reference
    app.state.served.engine.shutdown()


def client(app) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return openai.AsyncOpenAI(api_key="none", base_url="http://test/v1", http_client=http)


def raw(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_completion_matches_the_engine(served):
    app, reference = served
    want = reference.generate(["The history of"], SamplingParams(max_tokens=10, temperature=0.0))[0]

    async def go():
        got = await client(app).completions.create(model=MODEL, prompt="The history of", max_tokens=10,
                                                   temperature=0)
        return got

    got = asyncio.run(go())
    assert got.choices[0].text == want.text
    assert got.choices[0].finish_reason == want.finish_reason
    assert got.usage.completion_tokens == len(want.token_ids)
    assert got.usage.prompt_tokens == want.prompt_tokens


def test_chat_stream_equals_chat_without_stream(served):
    app, _ = served
    messages = [{"role": "user", "content": "Tell me about yards."}]

    async def go():
        c = client(app)
        whole = await c.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
        chunks = [ch async for ch in await c.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True})]
        return whole, chunks

    whole, chunks = asyncio.run(go())
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_sse_wire_format(served):
    app, _ = served

    async def go():
        async with raw(app) as http:
            r = await http.post("/v1/completions", json={"model": MODEL, "prompt": "A", "max_tokens": 3,
                                                         "stream": True, "temperature": 0})
            return r.headers["content-type"], r.text

    ctype, text = asyncio.run(go())
    assert ctype.startswith("text/event-stream")
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "text_completion"


def test_models_and_health(served):
    app, _ = served

    async def go():
        async with raw(app) as http:
            return (await http.get("/v1/models")).json(), (await http.get("/health")).status_code

    models, health = asyncio.run(go())
    assert models["data"][0]["id"] == MODEL and health == 200


BAD = [
    ("malformed json", "/v1/completions", b'{"model": "tiny-qwen3", "prompt": ', 400, None),
    ("not an object", "/v1/completions", b'[1, 2]', 400, None),
    ("lone surrogate", "/v1/completions", b'{"model": "tiny-qwen3", "prompt": "\\ud800"}', 400, "prompt"),
    ("surrogate in chat", "/v1/chat/completions",
     b'{"model": "tiny-qwen3", "messages": [{"role": "user", "content": "a\\udfff"}]}', 400, "messages.0.content"),
    ("wrong type", "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": "3"}, 400, "max_tokens"),
    ("unsupported parameter", "/v1/completions", {"model": MODEL, "prompt": "x", "logit_bias": {"1": 5}}, 400,
     "logit_bias"),
    ("unknown parameter", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                                   "frobnicate": True}, 400, "frobnicate"),
    ("token id out of range", "/v1/completions", {"model": MODEL, "prompt": [1, 10**9]}, 400, "prompt"),
    ("negative token id", "/v1/completions", {"model": MODEL, "prompt": [-1]}, 400, "prompt"),
    ("empty token list", "/v1/completions", {"model": MODEL, "prompt": [[]]}, 400, "prompt"),
    ("image part", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x"}}]}]}, 400, "messages.0.content.0"),
    ("unknown model", "/v1/completions", {"model": "gpt-9", "prompt": "x"}, 404, "model"),
    ("temperature", "/v1/completions", {"model": MODEL, "prompt": "x", "temperature": 7}, 400, "temperature"),
    ("top_p", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                        "top_p": 0}, 400, "top_p"),
    ("max_tokens", "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("n", "/v1/completions", {"model": MODEL, "prompt": "x", "n": 17}, 400, "n"),
    ("frequency_penalty", "/v1/completions", {"model": MODEL, "prompt": "x", "frequency_penalty": 2.5}, 400,
     "frequency_penalty"),
    ("no messages", "/v1/chat/completions", {"model": MODEL}, 400, "messages"),
    ("bad role", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, 400,
     "messages.0.role"),
    ("too long", "/v1/completions", {"model": MODEL, "prompt": "yard " * 400}, 400, "prompt"),
    ("too much output", "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 1000}, 400, "max_tokens"),
]


@pytest.mark.parametrize("name,path,body,status,param", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_openai_errors_and_a_good_one_still_succeeds(served, name, path, body, status, param):
    app, _ = served

    async def go():
        async with raw(app) as http:
            kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
            bad = http.post(path, headers={"content-type": "application/json"}, **kwargs)
            good = http.post("/v1/completions", json={"model": MODEL, "prompt": "The", "max_tokens": 5})
            return await asyncio.gather(bad, good)

    bad, good = asyncio.run(go())
    assert bad.status_code == status, bad.text
    error = bad.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    assert good.status_code == 200 and good.json()["choices"][0]["finish_reason"] in ("stop", "length")
