"""Backpressure and disconnects over real HTTP on loopback: a flood past the bound gets 429 at once while the
running streams keep making progress; clients that drop their streams free their sequences and KV slots."""

import asyncio
import json
import time

import httpx
import pytest

from served_app import http_server, served_app

MODEL = "tiny"
SLOTS, WAITING = 2, 2


@pytest.fixture(scope="module")
def server(checkpoints):
    with served_app(checkpoints["qwen3_moe"], MODEL, max_num_seqs=SLOTS, max_model_len=256,
                    max_waiting_requests=WAITING, max_request_bytes=4096) as app:
        with http_server(app) as url:
            yield app, url


def long_stream(max_tokens: int = 150) -> dict:
    return {"model": MODEL, "prompt": "The history of", "max_tokens": max_tokens, "ignore_eos": True,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}


def wait_idle(app, timeout: float = 30) -> None:
    engine = app.state.served.engine
    deadline = time.monotonic() + timeout
    cache = engine.engine.cache
    while engine.num_unfinished or cache.num_free_blocks != cache.num_blocks:
        assert time.monotonic() < deadline, "sequences still held after their clients left"
        time.sleep(0.05)


def test_a_flood_is_refused_at_once_and_running_streams_keep_going(server):
    app, url = server
    chunk_times: list[list[float]] = [[], []]

    async def stream(i: int, http: httpx.AsyncClient) -> int:
        tokens = 0
        async with http.stream("POST", f"{url}/v1/completions", json=long_stream()) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    chunk_times[i].append(time.monotonic())
                    usage = json.loads(line[6:]).get("usage")
                    tokens = usage["completion_tokens"] if usage else tokens
        return tokens

    async def go():
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=100)) as http:
            running = [asyncio.create_task(stream(i, http)) for i in range(2)]
            while not all(chunk_times):  # both streams decoding
                await asyncio.sleep(0.02)
            flood_start = time.monotonic()
            flood = await asyncio.gather(*[http.post(f"{url}/v1/completions", json={
                "model": MODEL, "prompt": "x", "max_tokens": 2}) for _ in range(40)])
            flood_end = time.monotonic()
            tokens = await asyncio.gather(*running)
            return flood, flood_start, flood_end, tokens, time.monotonic()

    flood, flood_start, flood_end, tokens, streams_end = asyncio.run(go())
    codes = [r.status_code for r in flood]
    refused = [r for r in flood if r.status_code == 429]
    assert codes.count(200) <= WAITING and len(refused) >= 40 - WAITING, codes
    assert set(codes) <= {200, 429}
    for r in refused:
        assert r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "rate_limit_error"
    assert flood_end < streams_end, "the refusals waited for the running streams"
    for times in chunk_times:  # the running streams made progress during the flood, and ran to the end
        assert any(flood_start <= t <= flood_end for t in times) or flood_end - flood_start < 0.5
    assert tokens == [150, 150]  # and each ran to its end
    wait_idle(app)
    ok = httpx.post(f"{url}/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2}, timeout=60)
    assert ok.status_code == 200


def test_dropped_streams_free_their_sequences_and_slots(server):
    app, url = server
    engine = app.state.served.engine

    async def drop_after_first_chunk(http: httpx.AsyncClient) -> None:
        async with http.stream("POST", f"{url}/v1/completions", json=long_stream(200)) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    return  # leaving the block closes the connection mid-stream

    async def go():
        for _ in range(3):  # bursts: each fills the slots and the queue, then every client leaves
            async with httpx.AsyncClient(timeout=60) as http:
                await asyncio.gather(*[drop_after_first_chunk(http) for _ in range(SLOTS)])

    steps_before = len(engine.engine.step_log)
    asyncio.run(go())
    wait_idle(app)
    # 3 bursts of 200-token streams: had they run on, hundreds of steps
    assert len(engine.engine.step_log) - steps_before < 3 * 30
    assert not engine.engine.scheduler.running and not engine.engine.scheduler.waiting


def test_a_body_too_large_is_413_and_too_many_sequences_a_400(server):
    _, url = server
    big = httpx.post(f"{url}/v1/completions", content=b'{"prompt": "' + b"x" * 5000 + b'"}',
                     headers={"content-type": "application/json"}, timeout=30)
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    many = httpx.post(f"{url}/v1/completions", json={"model": MODEL, "prompt": ["a", "b", "c"], "n": 2,
                                                     "max_tokens": 1}, timeout=30)
    assert many.status_code == 400 and many.json()["error"]["param"] == "n"
