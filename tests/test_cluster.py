"""The Serve application on a local single-node Ray: router + expert-group deployments + OpenAI API."""

import asyncio
import threading
import time

import httpx
import openai
import pytest
import ray
from ray import serve

from switchyard.cluster.app import build_app
from switchyard.configs.engine import EngineConfig
from switchyard.router.engine import Engine
from switchyard.router.sampling import SamplingParams

pytestmark = pytest.mark.ray
MODEL = "tiny"
PROMPTS = [("yard " * n).strip() for n in range(1, 17)]  # 16 prompts of different lengths
PRICES = {"router_replica_per_hour": 1.0, "expert_replica_per_hour": 0.5}


def app_config(path, groups: int, transport: str, placement: str | None = None, expert_replicas: int = 1,
               prices: dict | None = None, **router) -> dict:
    config = {"model": str(path), "served_model_name": MODEL, "num_groups": groups,
              "name": f"t{groups}{transport}{expert_replicas}",
              "router": {"transport": transport, "max_model_len": 128, "max_num_seqs": 16, "micro_batches": 2,
                         "expert_timeout_s": 20, **router},
              "router_pool": {"num_cpus": 0.5, "torch_threads": 1}, "prices": prices or {}}
    if groups:  # with none (every expert in the router), expert-group settings are refused
        config |= {"placement": placement,
                   "expert_pool": {"num_cpus": 0.25, "torch_threads": 1, "num_replicas": expert_replicas}}
    return config


class Deployed:
    def __init__(self, base: str, path, groups: int, transport: str, placement: str | None = None,
                 expert_replicas: int = 1, prices: dict | None = None):
        config = app_config(path, groups, transport, placement, expert_replicas, prices)
        self.name = config["name"]
        self.prefix = f"/{self.name}"
        serve.run(build_app(config), name=self.name, route_prefix=self.prefix)
        self.url = f"{base}{self.prefix}"

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key="none", max_retries=0, timeout=120)

    def close(self):
        serve.delete(self.name)


@pytest.fixture(scope="module")
def reference_texts(checkpoints):
    engine = Engine.from_pretrained(checkpoints["qwen3_moe"], EngineConfig(max_num_seqs=16, max_model_len=128))
    outs = engine.generate(PROMPTS, SamplingParams(max_tokens=16, temperature=0.0))
    return [(o.text, len(o.token_ids)) for o in outs]


async def complete_all(client) -> list[tuple[str, int]]:
    calls = [client.completions.create(model=MODEL, prompt=p, max_tokens=16, temperature=0) for p in PROMPTS]
    results = await asyncio.gather(*calls)
    return [(r.choices[0].text, r.usage.completion_tokens) for r in results]


def replicated_placement(tmp_path) -> str:
    """4 groups over 8 experts, experts 0 and 5 of every layer held by two groups each."""
    from switchyard.router.affinity.placement import Placement

    experts = [[0, 1, 5], [2, 3, 0], [4, 5], [6, 7]]
    doc = {"version": 1, "strategy": "test", "num_groups": 4, "num_experts": 8, "layers": [0, 1, 2],
           "groups": [{"name": f"group-{g}", "experts": {str(l): e for l in range(3)}} for g, e in enumerate(experts)]}
    path = tmp_path / "replicated.json"
    path.write_text(Placement.from_json(__import__("json").dumps(doc)).to_json())
    return str(path)


@pytest.mark.parametrize("groups,transport,placement,expert_replicas", [
    (0, "compiled", None, 1),  # one process: the router holds every expert
    (1, "actor", None, 1), (2, "actor", None, 1), (2, "handle", None, 1), (4, "actor", "replicated", 1),
    (2, "compiled", None, 1), (4, "compiled", "replicated", 1),
    (2, "compiled", None, 2),  # the compiled graph splits a group's tokens over its replicas
    (2, "socket", None, 1), (2, "socket", None, 2),  # sockets take turns over a group's replicas
])
def test_16_concurrent_greedy_requests_match_the_single_process_engine(ray_serve, checkpoints, reference_texts,
                                                                       tmp_path, groups, transport, placement,
                                                                       expert_replicas):
    placement = replicated_placement(tmp_path) if placement == "replicated" else None
    app = Deployed(ray_serve, checkpoints["qwen3_moe"], groups, transport, placement, expert_replicas)
    try:
        assert asyncio.run(complete_all(app.client())) == reference_texts
        stats = httpx.get(f"{app.url}/v1/switchyard/stats").json()
        assert stats["step_errors"] == 0 and len(stats["tokens_per_group"]) == groups
        if groups == 0:
            assert stats["experts"] == "router" and stats["cost"]["expert_replicas"] == []
            assert serve.get_app_handle(app.name).group_info.remote().result() == []
            return
        assert 1.0 <= stats["fan_out"] <= min(groups, 3)  # qwen3 tiny model: top-3
        # each group replica loaded exactly its own experts, and nothing else
        infos = serve.get_app_handle(app.name).group_info.remote().result()
        held = [{int(k): v for k, v in info["held"].items()} for info in infos]
        for layer in range(3):
            assert sorted(set(e for h in held for e in h[layer])) == list(range(8))
        for info, h in zip(infos, held):
            expected = {f"model.layers.{l}.mlp.experts.{e}.{p}.weight"
                        for l, es in h.items() for e in es for p in ("gate_proj", "up_proj", "down_proj")}
            assert set(info["tensors_read"]) == expected
        if expert_replicas > 1:  # every replica did work, not only the first
            calls = replica_calls(app.name)
            assert all(len(c) == expert_replicas and min(c) > 0 for c in calls.values()), calls
        if transport == "socket":
            # every expert call went through the replicas' sockets (none by actor calls: all on this node)
            assert replica_calls(app.name, "socket") == replica_calls(app.name), replica_calls(app.name, "socket")
            from switchyard.cluster.bench.cpu import cores_used

            # each replica waits in a blocking read: idle at once, with no teardown
            assert all(cores_used([info["pid"]], 2.0) < 0.2 for info in infos), infos
    finally:
        app.close()


def replica_calls(app_name: str, through: str = "any") -> dict[str, list[int]]:
    """Expert calls served by each replica of each group (`through` "socket": those that came by its socket),
    asked of the replicas' actors themselves."""
    from switchyard.cluster.deployments.registry import get_registry

    def calls(_actor) -> int:
        from switchyard.cluster.deployments import expert_group as expert_deployment

        serving = expert_deployment._SERVING
        return serving.socket_server.served if through == "socket" else serving.calls

    _, replicas = ray.get(get_registry(app_name).snapshot.remote())
    return {group: ray.get([actor.__ray_call__.remote(calls) for actor in actors.values()])
            for group, actors in replicas.items()}


@pytest.fixture(scope="module")
def two_groups(ray_serve, checkpoints):  # priced: its cost metrics are served (two_groups_compiled's are not)
    app = Deployed(ray_serve, checkpoints["qwen3_moe"], 2, "actor", prices=PRICES)
    yield app
    app.close()


@pytest.fixture(scope="module")
def one_process(ray_serve, checkpoints):
    app = Deployed(ray_serve, checkpoints["qwen3_moe"], 0, "compiled")
    yield app
    app.close()


@pytest.fixture(scope="module")
def two_groups_compiled(ray_serve, checkpoints):
    app = Deployed(ray_serve, checkpoints["qwen3_moe"], 2, "compiled")
    yield app
    app.close()


@pytest.mark.parametrize("app", ["two_groups", "one_process"])
def test_openai_client_chat_and_completions_streaming_and_not(request, app):
    served = request.getfixturevalue(app)

    async def go():
        c = served.client()
        messages = [{"role": "user", "content": "Which cars travel together?"}]
        chat = await c.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0)
        chat_stream = [ch async for ch in await c.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=10, temperature=0, stream=True)]
        comp = await c.completions.create(model=MODEL, prompt="A yard", max_tokens=10, temperature=0)
        comp_stream = [ch async for ch in await c.completions.create(
            model=MODEL, prompt="A yard", max_tokens=10, temperature=0, stream=True)]
        models = await c.models.list()
        return chat, chat_stream, comp, comp_stream, models

    chat, chat_stream, comp, comp_stream, models = asyncio.run(go())
    assert "".join(ch.choices[0].delta.content or "" for ch in chat_stream) == chat.choices[0].message.content
    assert "".join(ch.choices[0].text for ch in comp_stream) == comp.choices[0].text
    assert chat.usage.completion_tokens == 10 or chat.choices[0].finish_reason == "stop"
    assert [m.id for m in models.data] == [MODEL]


@pytest.mark.parametrize("app", ["two_groups", "one_process"])
def test_bad_request_on_the_cluster_leaves_a_good_one_alone(request, app):
    served = request.getfixturevalue(app)

    async def go():
        async with httpx.AsyncClient(timeout=60) as http:
            bad = http.post(f"{served.url}/v1/chat/completions",
                            json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "top_p": 3})
            good = http.post(f"{served.url}/v1/completions", json={"model": MODEL, "prompt": "yard", "max_tokens": 8})
            return await asyncio.gather(bad, good)

    bad, good = asyncio.run(go())
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "top_p"
    assert good.status_code == 200


@pytest.mark.parametrize("app", ["two_groups", "two_groups_compiled"])
def test_killing_a_group_replica_mid_request_ends_the_request_within_a_bound(request, app):
    from switchyard.cluster.deployments.registry import get_registry

    two_groups = request.getfixturevalue(app)
    _, replicas = ray.get(get_registry(two_groups.name).snapshot.remote())
    victim = next(iter(replicas[f"{two_groups.name}-experts-1"].values()))
    result = {}

    def long_request():
        start = time.monotonic()
        try:
            r = httpx.post(f"{two_groups.url}/v1/completions", timeout=90,
                           json={"model": MODEL, "prompt": "yard", "max_tokens": 100, "temperature": 0})
            result["status"] = r.status_code
        except httpx.HTTPError as err:
            result["status"] = repr(err)
        result["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=long_request)
    thread.start()
    time.sleep(0.5)
    ray.kill(victim, no_restart=True)
    thread.join(timeout=75)
    assert not thread.is_alive(), "the request hung"
    assert result["status"] in (200, 503), result  # retried on the replacement replica, or a clear 5xx
    # the app recovers: Serve replaces the replica and a new request succeeds
    deadline = time.monotonic() + 60
    while True:
        r = httpx.post(f"{two_groups.url}/v1/completions", timeout=60,
                       json={"model": MODEL, "prompt": "yard", "max_tokens": 4})
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert r.status_code == 200, r.text
    # the dead replica leaves the registry (the router reports it), so replica counts and cost see live ones only
    group = f"{two_groups.name}-experts-1"
    deadline = time.monotonic() + 10
    while True:
        _, replicas = ray.get(get_registry(two_groups.name).snapshot.remote())
        if victim not in replicas[group].values() or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert victim not in replicas[group].values() and len(replicas[group]) == 1


@pytest.mark.parametrize("app", ["two_groups", "two_groups_compiled"])
def test_metrics_and_cost_are_reported(request, app):
    two_groups = request.getfixturevalue(app)
    httpx.post(f"{two_groups.url}/v1/completions", timeout=60, json={"model": MODEL, "prompt": "yard", "max_tokens": 6})
    text = httpx.get(f"{two_groups.url}/metrics", timeout=30).text
    for name in ("switchyard_dispatch_fan_out", "switchyard_group_tokens_total", "switchyard_generated_tokens_total",
                 "switchyard_step_seconds", "switchyard_output_tokens_per_second"):
        assert name in text, name
    assert 'group="0"' in text and 'group="1"' in text
    cost = httpx.get(f"{two_groups.url}/v1/switchyard/stats", timeout=30).json()["cost"]
    assert cost["expert_replicas"] == [1, 1]
    if app == "two_groups":  # priced: 1 router replica at $1/h, 2 group replicas at $0.5/h
        assert "switchyard_cost_dollars_per_hour_USD{" in text
        assert cost["priced"] is True and cost["dollars_per_hour"] == 2.0 and cost["cost_per_million_tokens"] > 0
        return
    assert "switchyard_cost_dollars_per_hour_USD{" not in text  # no prices set: not priced, not $0
    assert cost["priced"] is False and cost["dollars_per_hour"] is None and cost["cost_per_million_tokens"] is None


def test_every_series_the_grafana_dashboard_reads_is_served(two_groups):
    """Each panel's PromQL (helm/dashboards/switchyard.json), parsed: the metrics it selects are on the router's
    /metrics, with the labels it groups or filters by. The app has groups and prices (per-group and cost
    series), one finished request and one refused (the `error_type` label)."""
    from prometheus_client.parser import text_string_to_metric_families

    from grafana_dashboard import label_names, load, metric_names, queries

    body = {"model": MODEL, "prompt": "yard", "max_tokens": 6}
    assert httpx.post(f"{two_groups.url}/v1/completions", timeout=60, json=body).status_code == 200
    assert httpx.post(f"{two_groups.url}/v1/completions", timeout=60, json={**body, "model": "nope"}).status_code == 404
    served: dict[str, set[str]] = {}  # sample name -> its label names
    for family in text_string_to_metric_families(httpx.get(f"{two_groups.url}/metrics", timeout=30).text):
        for sample in family.samples:
            served.setdefault(sample.name, set()).update(sample.labels)
    checked = queries(load())
    assert len(checked) >= 20
    missing = [(title, name) for title, expr in checked for name in metric_names(expr) if name not in served]
    assert missing == [], missing
    unlabelled = [(title, label) for title, expr in checked for label in label_names(expr)
                  if not any(label in served[name] for name in metric_names(expr))]
    assert unlabelled == [], unlabelled


def test_an_idle_compiled_graph_app_leaves_its_expert_replicas_idle(two_groups_compiled):
    from switchyard.cluster.bench.cpu import cores_used

    r = httpx.post(f"{two_groups_compiled.url}/v1/completions", timeout=60,
                   json={"model": MODEL, "prompt": "yard", "max_tokens": 6})
    assert r.status_code == 200
    infos = serve.get_app_handle(two_groups_compiled.name).group_info.remote().result()
    time.sleep(4)  # the router tears its graph down after 2 s without a step
    # a bound far above the real figure (`switchyard bench serve` reports it), so that it cannot flake; a replica
    # whose channel reader spins takes most of a core
    for info in infos:
        assert cores_used([info["pid"]], 3.0) < 0.2, info
    r = httpx.post(f"{two_groups_compiled.url}/v1/completions", timeout=60,
                   json={"model": MODEL, "prompt": "yard", "max_tokens": 6})
    assert r.status_code == 200  # and the next request builds the graph again
