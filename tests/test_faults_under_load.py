"""Faults under load on local Ray: 64 concurrent streaming clients while an expert-group replica, then the
router replica, is killed. Every request ends (its whole answer, or an error) within a bound, none hangs, and
the app recovers and answers as before."""

import asyncio
import json
import time

import httpx
import pytest
import ray
from ray import serve

from switchyard.cluster.app import build_app
from test_cluster import MODEL, app_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]
CLIENTS, TOKENS = 64, 24
BOUND_S = 150  # per request, from its start: the expert timeout (20 s) and a replica's restart, on 2 cores


async def one_stream(http: httpx.AsyncClient, url: str, i: int) -> dict:
    """A streaming request's end: "done" with its tokens, or "error" (an error event, a 5xx, a dropped
    connection); "silent" if it closed without either (a request dropped silently)."""
    body = {"model": MODEL, "prompt": f"yard {i}", "max_tokens": TOKENS, "ignore_eos": True, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    start = time.monotonic()
    result = {"end": "silent"}
    try:
        async with http.stream("POST", f"{url}/v1/completions", json=body) as r:
            if r.status_code != 200:
                result["end"] = f"error {r.status_code}"
            else:
                async for line in r.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    event = json.loads(line[6:])
                    if "error" in event:
                        result["end"] = "error event"
                    elif event.get("usage"):
                        result["end"], result["tokens"] = "done", event["usage"]["completion_tokens"]
    except httpx.HTTPError as err:
        result["end"] = f"error {type(err).__name__}"
    result["seconds"] = time.monotonic() - start
    return result


async def load(url: str, during=None) -> list[dict]:
    limits = httpx.Limits(max_connections=CLIENTS + 8)
    async with httpx.AsyncClient(timeout=httpx.Timeout(BOUND_S), limits=limits) as http:
        tasks = [asyncio.create_task(one_stream(http, url, i)) for i in range(CLIENTS)]
        if during is not None:
            await asyncio.sleep(2.0)  # the streams have started
            await asyncio.get_running_loop().run_in_executor(None, during)
        return await asyncio.wait_for(asyncio.gather(*tasks), BOUND_S + 30)


def greedy(url: str) -> str | None:
    try:
        r = httpx.post(f"{url}/v1/completions", timeout=60,
                       json={"model": MODEL, "prompt": "The history of", "max_tokens": 8, "temperature": 0})
    except httpx.HTTPError:
        return None
    return r.json()["choices"][0]["text"] if r.status_code == 200 else None


def recovered(url: str, want: str, timeout_s: float = 180) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if greedy(url) == want:
            return True
        time.sleep(1)
    return False


def replica_actor(deployment: str):
    """The Serve replica actor of `deployment` (one replica)."""
    names = [a for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith("SERVE_REPLICA::") and f"#{deployment}#" in a["name"]]
    assert names, f"no replica of {deployment}"
    return ray.get_actor(names[0]["name"], namespace=names[0]["namespace"])


def check_every_request_ended(results: list[dict]) -> None:
    ends = [r["end"] for r in results]
    assert "silent" not in ends, ends
    assert max(r["seconds"] for r in results) < BOUND_S, results
    for r in results:
        if r["end"] == "done":
            assert r["tokens"] == TOKENS


def summary(results: list[dict]) -> dict:
    counts: dict = {}
    for r in results:
        counts[r["end"]] = counts.get(r["end"], 0) + 1
    return {**counts, "slowest_s": round(max(r["seconds"] for r in results), 1)}


def test_killing_replicas_under_64_streams(ray_serve, checkpoints):
    config = app_config(checkpoints["qwen3_moe"], 2, "actor", max_num_seqs=CLIENTS, max_waiting_requests=CLIENTS)
    config["name"] = "faults"
    config["router_pool"]["max_ongoing_requests"] = 2 * CLIENTS
    serve.run(build_app(config), name="faults", route_prefix="/faults")
    url = f"{ray_serve}/faults"
    try:
        want = greedy(url)
        assert want is not None
        baseline = asyncio.run(load(url))
        assert [r["end"] for r in baseline] == ["done"] * CLIENTS

        group = replica_actor("faults-experts-1")
        results = asyncio.run(load(url, during=lambda: ray.kill(group, no_restart=True)))
        check_every_request_ended(results)
        ends = {"expert-group kill": summary(results)}
        assert recovered(url, want), "the app did not recover after an expert-group replica died"

        router = replica_actor("faults-router")
        results = asyncio.run(load(url, during=lambda: ray.kill(router, no_restart=True)))
        check_every_request_ended(results)
        assert recovered(url, want), "the app did not recover after the router replica died"
        ends["router kill"] = summary(results)
        print(ends)
    finally:
        serve.delete("faults")


def rss(actor) -> int:
    def measure(_actor) -> int:
        import gc

        import psutil

        gc.collect()
        return psutil.Process().memory_info().rss

    return ray.get(actor.__ray_call__.remote(measure))


SOAK_S, SOAK_GROWTH = 60, 48 << 20


def test_a_soak_leaves_no_memory_growth(ray_serve, checkpoints):
    """Waves of 64 streams (some dropped mid-way) for a minute: the router's and the groups' memory after the
    last wave is within SOAK_GROWTH of what it was after the second (the first warms caches and allocators)."""
    config = app_config(checkpoints["qwen3_moe"], 2, "actor", max_num_seqs=CLIENTS, max_waiting_requests=CLIENTS)
    config["name"] = "soak"
    config["router_pool"]["max_ongoing_requests"] = 2 * CLIENTS
    serve.run(build_app(config), name="soak", route_prefix="/soak")
    url = f"{ray_serve}/soak"

    async def wave() -> list[dict]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(BOUND_S), limits=httpx.Limits(max_connections=80)) as http:
            streams = [asyncio.create_task(one_stream(http, url, i)) for i in range(CLIENTS)]
            await asyncio.sleep(0.5)
            for task in streams[::4]:  # a quarter of the clients leave mid-stream
                task.cancel()
            return [r for r in await asyncio.gather(*streams, return_exceptions=True) if isinstance(r, dict)]

    try:
        actors = {name: replica_actor(name) for name in ("soak-router", "soak-experts-0", "soak-experts-1")}
        asyncio.run(wave())
        asyncio.run(wave())
        before = {name: rss(a) for name, a in actors.items()}
        start, waves = time.monotonic(), 0
        while time.monotonic() - start < SOAK_S:
            results = asyncio.run(wave())
            assert all(r["end"] == "done" for r in results), [r["end"] for r in results]
            waves += 1
        after = {name: rss(a) for name, a in actors.items()}
        growth = {name: (after[name] - before[name]) >> 20 for name in actors}
        print({"waves": waves, "growth_mib": growth, "rss_mib": {n: v >> 20 for n, v in after.items()}})
        assert all(after[n] - before[n] < SOAK_GROWTH for n in actors), growth
    finally:
        serve.delete("soak")
