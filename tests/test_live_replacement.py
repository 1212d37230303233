"""Re-placement while serving, on a local Ray: the switch under concurrent load loses nothing and changes no
greedy output; afterwards the router's recorded fan-out is the new placement's prediction on the same tokens;
a replica started after the switch loads the new placement."""

import asyncio
import json
import time

import httpx
import pytest
import ray
from ray import serve

from switchyard.cluster.app import build_app
from switchyard.cluster.deployments.registry import get_registry
from switchyard.configs.engine import EngineConfig
from switchyard.router.affinity.placement import Placement
from switchyard.router.affinity.strategies import round_robin
from switchyard.router.engine import Engine
from switchyard.router.sampling import SamplingParams

pytestmark = [pytest.mark.ray, pytest.mark.slow]
MODEL = "tiny"
PROMPTS = [("yard " * n).strip() for n in range(1, 9)]
MAX_TOKENS = 16
LAYERS = (0, 1, 2)


@pytest.fixture(scope="module")
def reference(checkpoints):
    engine = Engine.from_pretrained(checkpoints["qwen3_moe"], EngineConfig(max_num_seqs=16, max_model_len=128))
    outs = engine.generate(PROMPTS, SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0))
    return [o.text for o in outs]


def deploy(base, path, name, transport):
    config = {"model": str(path), "served_model_name": MODEL, "num_groups": 2, "name": name,
              "router": {"transport": transport, "max_model_len": 128, "max_num_seqs": 16, "expert_timeout_s": 20},
              "router_pool": {"num_cpus": 0.5, "torch_threads": 1},
              "expert_pool": {"num_cpus": 0.25, "torch_threads": 1},
              "replacement": {"window_tokens": 1 << 16, "min_tokens": 8}}
    serve.run(build_app(config), name=name, route_prefix=f"/{name}")
    return f"{base}/{name}"


async def load_across(url: str, switch) -> tuple[list, dict, float, float]:
    """Workers send the prompts in turn, greedy, until `switch()` (awaited meanwhile) returns, then one more each."""
    done = asyncio.Event()
    results = []

    async def worker(http, offset):
        i = offset
        while True:
            last = done.is_set()
            start = time.monotonic()
            r = await http.post(f"{url}/v1/completions", json={"model": MODEL, "prompt": PROMPTS[i % len(PROMPTS)],
                                                               "max_tokens": MAX_TOKENS, "temperature": 0})
            results.append((i % len(PROMPTS), r.status_code, r.json(), start, time.monotonic()))
            i += 1
            if last:
                return

    async with httpx.AsyncClient(timeout=120) as http:
        workers = [asyncio.create_task(worker(http, k)) for k in range(8)]
        while not results:  # the load runs before the switch starts
            await asyncio.sleep(0.05)
        began = time.monotonic()
        answer = await switch(http)
        ended = time.monotonic()
        done.set()
        await asyncio.gather(*workers)
    return results, answer, began, ended


async def post_switch(http, url: str, placement: Placement) -> dict:
    r = await http.post(f"{url}/v1/switchyard/placement",
                        json={"dry_run": False, "min_gain": None, "placement": json.loads(placement.to_json())})
    assert r.status_code == 200, r.text
    return r.json()


def replicated_placement() -> Placement:
    """Two groups of five: each holds half the experts and a copy of one of the other half's."""
    import numpy as np

    holds = np.zeros((len(LAYERS), 2, 8), bool)
    holds[:, 0, [0, 1, 2, 3, 4]] = holds[:, 1, [4, 5, 6, 7, 0]] = True
    return Placement("replicated", LAYERS, holds)


@pytest.mark.parametrize("transport", ["compiled", "socket", "actor"])
def test_switch_under_concurrent_load(ray_serve, checkpoints, reference, transport):
    name = f"replace-{transport}"
    url = deploy(ray_serve, checkpoints["qwen3_moe"], name, transport)
    new = round_robin(LAYERS, 8, 2)  # from the contiguous split: half of every group's experts move
    try:
        results, answer, began, _ = asyncio.run(load_across(url, lambda http: post_switch(http, url, new)))
        assert answer["applied"] and answer["switch"]["version"] == 1 and answer["switch"]["experts_loaded"] == 12
        assert all(status == 200 for _, status, *_ in results), [r[1:3] for r in results if r[1] != 200]
        assert [body["choices"][0]["text"] for i, _, body, *_ in results] == [reference[i] for i, *_ in results]
        assert answer["switch"]["sequences_in_flight"] > 0  # requests were running when the tables changed
        assert [r for r in results if r[3] < began and r[4] > began], "no request was in flight as the switch began"
        stats = httpx.get(f"{url}/v1/switchyard/stats", timeout=30).json()
        assert stats["step_errors"] == 0

        # recorded fan-out since the switch = the new placement's prediction on the same tokens: exact, because
        # without replicas each expert has one group, so a token's groups follow from its routing alone
        state = httpx.get(f"{url}/v1/switchyard/placement", timeout=30).json()
        since = state["since_switch"]
        assert state["version"] == 1 and state["strategy"] == "round_robin" and since["token_layers"] > 0
        assert since["recorded_fan_out"] == pytest.approx(since["predicted_fan_out"], abs=1e-9)
        assert since["window_tokens"] * len(LAYERS) == since["token_layers"] and since["window_holds_all"]

        # every replica holds the new assignment only, and the registry has it as current
        registry = get_registry(name)
        assert ray.get(registry.placement_state.remote(_deploy_id(registry))).target_version is None
        infos = serve.get_app_handle(name).group_info.remote().result()
        for g, info in enumerate(infos):
            assert {int(k): sorted(v) for k, v in info["held"].items()} == new.experts_of_group(g)

        assert since["replayed_fan_out"] == pytest.approx(since["recorded_fan_out"], abs=1e-9)

        if transport == "compiled":  # a second switch, to a placement with replicas, under load again
            replicated = replicated_placement()
            results, answer, began, _ = asyncio.run(load_across(url, lambda http: post_switch(http, url, replicated)))
            assert answer["applied"] and answer["switch"]["version"] == 2
            assert all(status == 200 for _, status, *_ in results)
            assert [body["choices"][0]["text"] for i, _, body, *_ in results] == [reference[i] for i, *_ in results]
            since = httpx.get(f"{url}/v1/switchyard/placement", timeout=30).json()["since_switch"]
            # with replicas the router picks a replica per token, from its call's loads: the replay of its calls
            # counts the same; evaluate_placement's own batches may pick other replicas (reported, not compared)
            assert since["recorded_fan_out"] == pytest.approx(since["replayed_fan_out"], abs=1e-9)
            infos = serve.get_app_handle(name).group_info.remote().result()
            for g, info in enumerate(infos):
                assert {int(k): sorted(v) for k, v in info["held"].items()} == replicated.experts_of_group(g)

        if transport == "actor":  # a replica started after the switch loads the new placement, not its bound one
            _, replicas = ray.get(registry.snapshot.remote())
            victim = next(iter(replicas[f"{name}-experts-1"].values()))
            ray.kill(victim, no_restart=True)
            deadline = time.monotonic() + 90
            while True:
                _, replicas = ray.get(registry.snapshot.remote())
                fresh = [a for a in replicas[f"{name}-experts-1"].values() if a != victim]
                if fresh or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert fresh, "Serve did not replace the killed replica"
            def held_by(_actor) -> dict:  # defined here: Ray ships it by value (the test module is not importable)
                from switchyard.cluster.deployments import expert_group as expert_deployment

                return {layer: sorted(ids) for layer, ids in expert_deployment._SERVING.group.held().items()}

            held = ray.get(fresh[0].__ray_call__.remote(held_by))
            assert held == new.experts_of_group(1)
            r = httpx.post(f"{url}/v1/completions", timeout=90,
                           json={"model": MODEL, "prompt": PROMPTS[3], "max_tokens": MAX_TOKENS, "temperature": 0})
            assert r.status_code == 200 and r.json()["choices"][0]["text"] == reference[3]
    finally:
        serve.delete(name)


def _deploy_id(registry) -> str:
    """The app's deployment id: the one the registry holds placement versions for (one app per registry here)."""
    return next(iter(ray.get(registry.__ray_call__.remote(lambda self: list(self._placements)))))
