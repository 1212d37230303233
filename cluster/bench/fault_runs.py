"""One fault on a served app, and what its clients saw: the driver of `switchyard bench faults` and of the fault
tests (tests/test_faults.py).

A run injects one fault into an app that is deployed and warm, either under load (`streams` streaming
greedy requests in flight) or idle (after `idle_s` without a request: the compiled graph is torn down), and
from the moment of the fault asks one short greedy request after another until one comes back right. Each
request ends as one of:
  done     its whole answer, the same text as the single-process engine's (`want`)
  wrong    its whole answer, another text: a fault computed something wrong
  503      an OpenAI error with status 503 and Retry-After, or, in a stream already started, an error event
           of type server_error
  cut      the connection ended without either (the router's process died under the stream)
  lost     Serve's HTTP proxy answered 500 in plain text: the router's process died with the request before
           its answer began (the proxy does not send a request again once a replica took it)
  hung     no end within `bound_s`
  other    any other status
Recovery time: from the fault to the first request started after it that comes back right.

The faults:
  expert-kill   SIGKILL of the process of a replica of the last expert group
  router-kill   SIGKILL of the router replica's process
  engine-error  an exception on the router's engine thread outside a step (its metrics callback raises): the
                engine fails, and Serve restarts the replica on its failed health check
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from dataclasses import dataclass, field

import httpx

FAULTS = ("expert-kill", "router-kill", "engine-error")
ENDS = ("done", "wrong", "503", "cut", "lost", "hung", "other")


@dataclass
class FaultRun:
    fault: str
    transport: str
    mode: str  # "load" or "idle"
    ends: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENDS, 0))
    recover_s: float | None = None  # None: not recovered within the run's limit
    slowest_s: float = 0.0

    def count(self, end: str, seconds: float) -> None:
        self.ends[end] += 1
        self.slowest_s = max(self.slowest_s, seconds)

    def row(self) -> list:
        e = self.ends
        return [self.fault, self.transport, self.mode, e["done"], e["503"], e["cut"] + e["lost"], e["hung"],
                e["wrong"] + e["other"], self.recover_s, self.slowest_s]


HEADERS = ["fault", "transport", "when", "completed", "failed 503", "cut/lost", "hung", "wrong/other",
           "recover s", "slowest s"]


# -- the faults ---------------------------------------------------------------------------------------------
def _pid(_actor) -> int:
    return os.getpid()


def _break_engine_thread(_actor) -> None:
    """Runs in the router replica: its engine's metrics callback raises at the next step."""
    from ray import serve

    engine = serve.get_replica_context().servable_object.engine

    def metrics_bug(stats, outputs):
        raise RuntimeError("injected fault: the engine thread raised outside a step")

    engine.on_step = metrics_bug


def serve_replica(deployment: str):
    """The actor of a replica of the Serve deployment named `deployment`."""
    import ray

    names = [a for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith("SERVE_REPLICA::") and f"#{deployment}#" in a["name"]]
    if not names:
        raise LookupError(f"no replica of {deployment}")
    return ray.get_actor(names[0]["name"], namespace=names[0]["namespace"])


def inject(fault: str, app_name: str, last_group: str) -> None:
    """`last_group`: the deployment name of the expert group whose replica `expert-kill` kills."""
    import ray

    if fault == "engine-error":
        ray.get(serve_replica(f"{app_name}-router").__ray_call__.remote(_break_engine_thread), timeout=30)
        return
    victim = serve_replica(last_group if fault == "expert-kill" else f"{app_name}-router")
    os.kill(ray.get(victim.__ray_call__.remote(_pid), timeout=30), signal.SIGKILL)


# -- the clients ----------------------------------------------------------------------------------------------
def prompt(i: int) -> str:
    return f"yard {i} carries"


async def one_request(http: httpx.AsyncClient, url: str, model: str, i: int, max_tokens: int, want: dict[int, str],
                      stream: bool, bound_s: float) -> tuple[str, float]:
    body = {"model": model, "prompt": prompt(i), "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": stream}
    start = time.monotonic()
    try:
        end = await asyncio.wait_for(_send(http, url, body, want[i]), bound_s)
    except asyncio.TimeoutError:
        end = "hung"
    return end, time.monotonic() - start


async def _send(http: httpx.AsyncClient, url: str, body: dict, want: str) -> str:
    try:
        if not body["stream"]:
            r = await http.post(f"{url}/v1/completions", json=body)
            if r.status_code == 200:
                return "done" if r.json()["choices"][0]["text"] == want else "wrong"
            return _failed(r)
        text, done = "", False
        async with http.stream("POST", f"{url}/v1/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return _failed(r)
            async for line in r.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: {"):
                    event = json.loads(line[6:])
                    if "error" in event:
                        return "503" if event["error"].get("type") == "server_error" else "other"
                    text += event["choices"][0]["text"] if event.get("choices") else ""
        if not done:
            return "cut"
        return "done" if text == want else "wrong"
    except httpx.HTTPError:  # the connection went down mid-way
        return "cut"


def _failed(r: httpx.Response) -> str:
    if r.status_code == 503 and r.headers.get("retry-after") and _is_error(r.text):
        return "503"
    if r.status_code == 500 and not r.headers.get("content-type", "").startswith("application/json"):
        return "lost"  # not the app's answer (it answers JSON): the proxy's, for a replica that died
    return "other"


def _is_error(text: str) -> bool:
    try:
        return json.loads(text)["error"]["type"] == "server_error"
    except (ValueError, KeyError, TypeError):
        return False


def reference_texts(model_path, count: int, max_tokens: int) -> dict[int, str]:
    """The single-process engine's greedy text of prompt(i) for i < count, and of the probe (key -1)."""
    from switchyard.configs.engine import EngineConfig
    from switchyard.router.engine import Engine
    from switchyard.router.sampling import SamplingParams

    engine = Engine.from_pretrained(model_path, EngineConfig(max_num_seqs=max(count, 1) + 1, max_model_len=256))
    outputs = engine.generate([prompt(i) for i in [*range(count), -1]],
                              SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True))
    return {i: o.text for i, o in zip([*range(count), -1], outputs)}


async def _run(run: FaultRun, url: str, model: str, want: dict[int, str], app_name: str, last_group: str,
               streams: int, max_tokens: int, idle_s: float, bound_s: float, recover_limit_s: float) -> None:
    limits = httpx.Limits(max_connections=streams + 8)
    async with httpx.AsyncClient(timeout=httpx.Timeout(bound_s + 5), limits=limits) as http:
        load = []
        if run.mode == "load":
            load = [asyncio.create_task(one_request(http, url, model, i, max_tokens, want, True, bound_s))
                    for i in range(streams)]
            await asyncio.sleep(1.0)  # the streams are under way
        else:
            await asyncio.sleep(idle_s)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, inject, run.fault, app_name, last_group)
        fault_at = time.monotonic()
        while time.monotonic() - fault_at < recover_limit_s:  # probes, one after another, until one is right
            end, seconds = await one_request(http, url, model, -1, max_tokens, want, False, bound_s)
            run.count(end, seconds)
            if end == "done":
                run.recover_s = time.monotonic() - fault_at
                break
            await asyncio.sleep(0.25)
        for end, seconds in await asyncio.gather(*load):
            run.count(end, seconds)


def run_fault(fault: str, transport: str, mode: str, url: str, model: str, want: dict[int, str], app_name: str,
              last_group: str, streams: int = 32, max_tokens: int = 16, idle_s: float = 4.0, bound_s: float = 60.0,
              recover_limit_s: float = 90.0) -> FaultRun:
    """One fault on a warm app at `url`; `want` from `reference_texts(.., streams, max_tokens)`."""
    run = FaultRun(fault, transport, mode)
    asyncio.run(_run(run, url, model, want, app_name, last_group, streams, max_tokens, idle_s, bound_s,
                     recover_limit_s))
    return run


def wait_until_serving(url: str, model: str, want: dict[int, str], max_tokens: int, limit_s: float = 120.0) -> bool:
    """Until the probe comes back right (after a run: the app has recovered before the next fault)."""
    deadline = time.monotonic() + limit_s
    body = {"model": model, "prompt": prompt(-1), "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    while time.monotonic() < deadline:
        try:
            r = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
            if r.status_code == 200 and r.json()["choices"][0]["text"] == want[-1]:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False
