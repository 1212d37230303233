"""Faults on the engine thread, in-process (no Ray): nothing hangs, nothing is computed wrong, /health tells.

- a step that raises anywhere in it (after the model ran too) fails that step's requests with a 503 and
  Retry-After, and the engine runs on: the next request gets the single-process engine's greedy text;
- anything that raises on the engine thread outside a step (here the metrics callback) fails the engine: every
  request in it ends with a 503, later ones are refused with a 503 at once, and /health answers 503.
"""

import asyncio

import httpx
import pytest

from switchyard.cluster.api.openai_routes import ServedModel, build_openai_app
from switchyard.configs.engine import EngineConfig
from switchyard.router.async_engine import AsyncEngine
from switchyard.router.engine import Engine
from switchyard.router.sampling import SamplingParams

MODEL = "tiny"
BOUND_S = 60  # no request may take longer (they take well under a second here)


def make_app(path, engine: Engine):
    app = build_openai_app()
    app.state.served = ServedModel(MODEL, AsyncEngine(engine), 128)
    return app


async def completions(app, count: int, stream: bool = False, max_tokens: int = 8) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        body = {"model": MODEL, "prompt": "The history of", "max_tokens": max_tokens, "temperature": 0,
                "stream": stream}
        calls = [http.post("/v1/completions", json=body) for _ in range(count)]
        return await asyncio.wait_for(asyncio.gather(*calls), BOUND_S)


async def health(app) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        return await http.get("/health")


@pytest.fixture(scope="module")
def greedy(checkpoints) -> str:
    engine = Engine.from_pretrained(checkpoints["qwen3_moe"], EngineConfig(max_num_seqs=4, max_model_len=128))
    return engine.generate(["The history of"], SamplingParams(max_tokens=8, temperature=0.0))[0].text


def test_a_step_that_raises_after_the_model_ran_fails_its_requests_and_the_engine_runs_on(checkpoints, greedy):
    engine = Engine.from_pretrained(checkpoints["qwen3_moe"], EngineConfig(max_num_seqs=4, max_model_len=128))
    app = make_app(checkpoints["qwen3_moe"], engine)
    postprocess, calls = engine._postprocess, []

    def fails_once(*args):  # the third token's bookkeeping raises: the cache holds it, the sequence does not
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected")
        return postprocess(*args)

    engine._postprocess = fails_once
    try:
        failed = asyncio.run(completions(app, 2))
        assert [r.status_code for r in failed] == [503, 503]
        assert all(r.headers["retry-after"] and "injected" in r.json()["error"]["message"] for r in failed)
        again = asyncio.run(completions(app, 3))
        assert [r.json()["choices"][0]["text"] for r in again] == [greedy] * 3
        assert asyncio.run(health(app)).status_code == 200
    finally:
        app.state.served.engine.shutdown()


@pytest.mark.parametrize("stream", [False, True])
def test_an_exception_outside_a_step_fails_the_engine_loudly(checkpoints, stream):
    engine = Engine.from_pretrained(checkpoints["qwen3_moe"], EngineConfig(max_num_seqs=4, max_model_len=128))
    app = make_app(checkpoints["qwen3_moe"], engine)
    served = app.state.served

    def metrics_bug(stats, outputs):
        raise ValueError("a bug in a metrics callback")

    served.engine.on_step = metrics_bug
    try:
        assert asyncio.run(health(app)).status_code == 200
        responses = asyncio.run(completions(app, 6, stream=stream, max_tokens=20))  # 4 run, 2 wait: all end
        if stream:  # a stream that had started gets its error as an event; one the failure beat, a 503
            for r in responses:
                assert (r.status_code == 200 and '"type": "server_error"' in r.text) or \
                    (r.status_code == 503 and r.headers["retry-after"]), (r.status_code, r.text)
        else:
            assert all(r.status_code == 503 and r.headers["retry-after"] for r in responses)
        assert "a bug in a metrics callback" in served.engine.problem()
        refused = asyncio.run(completions(app, 1))[0]  # refused at once, never queued
        assert refused.status_code == 503 and refused.headers["retry-after"]
        sick = asyncio.run(health(app))
        assert sick.status_code == 503 and sick.json()["error"]["code"] == "unhealthy"
    finally:
        served.engine.shutdown()


def test_a_step_running_past_its_bound_makes_the_engine_unhealthy(checkpoints):
    import threading

    engine = Engine.from_pretrained(checkpoints["qwen3_moe"], EngineConfig(max_num_seqs=4, max_model_len=128))
    release = threading.Event()
    step = engine.step
    engine.step = lambda: (release.wait(30), step())[1]  # a transport whose deadline does not hold
    app = make_app(checkpoints["qwen3_moe"], engine)
    served = app.state.served
    served.engine.stuck_after_s = 0.5

    async def go():
        request = asyncio.create_task(completions(app, 1))
        await asyncio.sleep(1.5)
        sick = await health(app)
        release.set()
        return sick, (await request)[0], await health(app)

    try:
        sick, response, well = asyncio.run(go())
        assert sick.status_code == 503 and "running for" in sick.json()["error"]["message"]
        assert response.status_code == 200 and well.status_code == 200
    finally:
        served.engine.shutdown()
