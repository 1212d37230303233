"""Re-placement while serving, the parts without Ray: the router's routing window, an expert group that gains
and drops experts while it serves, the step-boundary hook, and the placement endpoint's answers and errors.
The switch itself, on a served app under load, is tests/test_live_replacement.py."""

import asyncio
import json
import time

import httpx
import pytest
import torch

from switchyard.cluster.deployments.expert_group import ExpertGroupServer
from switchyard.cluster.api.openai_routes import build_openai_app
from switchyard.cluster.api.placement_routes import PlacementService, add_placement_routes
from switchyard.cluster.cli.place_live import format_answer
from switchyard.configs.engine import EngineConfig
from switchyard.experts.checkpoint import Checkpoint
from switchyard.experts.group import ExpertGroup
from switchyard.experts.messages import ExpertRequest
from switchyard.router.affinity.strategies import contiguous, round_robin
from switchyard.router.async_engine import AsyncEngine
from switchyard.router.batch import StepBatch
from switchyard.router.dense_model import Routing
from switchyard.router.engine import Engine
from switchyard.router.sampling import SamplingParams
from switchyard.router.trace_recorder import RoutingWindow, trace_metadata

LAYERS = (0, 1, 2)  # the tiny models' MoE layers


def metadata(num_experts=8, top_k=3):
    from switchyard.router.affinity.traces import TraceMetadata

    return TraceMetadata("t", num_experts, top_k, LAYERS)


def step(seqs: list[int], positions: list[int]):
    """One new token per sequence at `positions` (block tables are irrelevant to the window)."""
    return StepBatch.build([[1] for _ in seqs], positions, [[i] for i in range(len(seqs))], 16, seqs)


def routing(ids):
    ids = torch.tensor(ids)
    return Routing(ids, torch.ones(ids.shape))


# -- the window ------------------------------------------------------------------------------------------------
def test_the_window_keeps_the_last_tokens_of_every_layer_and_what_came_after_a_mark():
    window = RoutingWindow(metadata(), max_tokens=4)
    for pos in range(3):
        batch = step([0, 1], [pos, pos])  # two sequences, one token each per step
        for layer in LAYERS:
            window.observe(layer, batch, routing([[0, 1, 2], [3, 4, 5]]))
        if pos == 0:
            mark = window.mark()
    trace = window.trace()
    assert trace.num_rows == 4 * 3 and len(window) == 12  # 6 tokens seen, the last 4 kept at every layer
    assert sorted(set(zip(trace.seq_id.tolist(), trace.pos.tolist()))) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    after = window.trace(since=mark)
    assert after.num_rows == 12 and after.aligned().num_tokens == 4
    assert window.holds_since(mark) and not window.holds_since(0)  # the first step's chunks were evicted
    assert [layer for layer, _ in window.calls(since=mark)] == list(LAYERS) * 2


def test_the_window_records_a_dropped_expert_as_the_tokens_first_and_a_recomputed_token_once():
    window = RoutingWindow(metadata(), max_tokens=16)
    batch = step([7], [0])
    window.observe(0, batch, routing([[5, -1, 2]]))
    window.observe(0, batch, routing([[6, 1, 2]]))  # the same token again (recomputed): the last one counts
    trace = window.trace()
    assert trace.num_rows == 1 and trace.expert_ids.tolist() == [[6, 1, 2]]
    window2 = RoutingWindow(metadata(), max_tokens=16)
    window2.observe(0, batch, routing([[5, -1, 2]]))
    assert window2.trace().expert_ids.tolist() == [[5, 5, 2]]
    assert RoutingWindow(metadata(), 4).trace().num_rows == 0


# -- an expert group gaining and dropping experts ------------------------------------------------------------
def test_a_group_that_gains_and_drops_experts_computes_what_a_fresh_group_does(checkpoints):
    ckpt = Checkpoint.open(checkpoints["qwen3_moe"])
    start = ExpertGroup.load(ckpt, {0: [0, 1], 1: [2]})
    grown = start.with_experts(ckpt, {0: [1, 5], 1: [2, 3], 2: [7]}, torch.float32)
    assert grown.held() == {0: (0, 1, 5), 1: (2, 3), 2: (7,)}
    shrunk = grown.restricted_to({0: [5], 1: [2, 3]})
    assert shrunk.held() == {0: (5,), 1: (2, 3)}
    hidden = torch.randn(5, ckpt.config.hidden_size)
    for group, layer, ids in ((grown, 0, [[0, 5], [1, 1], [5, 0], [0, 1], [5, 5]]), (shrunk, 1, [[2, 3]] * 5),
                              (shrunk, 0, [[5, -1]] * 5)):
        held = sorted({e for row in ids for e in row if e >= 0})
        fresh = ExpertGroup.load(Checkpoint.open(checkpoints["qwen3_moe"]), {layer: held})
        request = ExpertRequest(layer, hidden, torch.tensor(ids), torch.rand(5, 2))
        assert torch.equal(group.forward(request).hidden, fresh.forward(request).hidden)
    # rows already held keep their place: the old group's index is right for the grown weights
    assert torch.equal(grown.layers[0].w13[:2], start.layers[0].w13)


def test_a_server_loads_on_a_thread_and_reports_when_done(checkpoints):
    server = ExpertGroupServer(str(checkpoints["qwen3_moe"]), {0: [0], 1: [0], 2: [0]})
    server.start_change("a", "hold", {0: [0, 3]})
    deadline = time.monotonic() + 30
    while server._changes["a"] is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server._changes["a"] == "ok" and server.info()["held"]["0"] == [0, 3]
    server.start_change("b", "retain", {0: [3], 1: [0], 2: [0]})
    while server._changes["b"] is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.info()["held"] == {"0": [3], "1": [0], "2": [0]}
    server.start_change("c", "hold", {0: [99]})
    while server._changes["c"] is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "out of range" in server._changes["c"]  # reported, the group unchanged
    assert server.info()["held"]["0"] == [3]
    with pytest.raises(ValueError, match="op must be"):
        server.start_change("d", "move", {})


def test_a_call_between_steps_runs_on_the_engine_thread_while_requests_run(checkpoints):
    engine = AsyncEngine(Engine.from_pretrained(checkpoints["qwen3_moe"], EngineConfig(max_num_seqs=2,
                                                                                        max_model_len=64)))
    try:
        seen = []

        async def go():
            seq = engine.validate("yard yard", SamplingParams(max_tokens=8, temperature=0))
            stream = engine.submit(seq)
            future = engine.call_between_steps(lambda: seen.append(len(engine.engine.step_log)) or "done")
            outputs = [o async for o in stream]
            return await asyncio.wrap_future(future), outputs

        result, outputs = asyncio.run(go())
        assert result == "done" and outputs[-1].finished and len(seen) == 1
        failing = engine.call_between_steps(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(timeout=10)
    finally:
        engine.shutdown()


# -- the endpoint ----------------------------------------------------------------------------------------------
class _NoSwitch:
    """A Replacer stand-in for the answers that never switch."""

    def __init__(self, placement):
        self.placement, self.version, self.busy = placement, 0, False

    async def apply(self, placement):
        raise AssertionError("a dry run or a refused proposal must not apply")


@pytest.fixture(scope="module")
def window(checkpoints):
    """The routing of some greedy generations of the tiny model, as the router's window records it."""
    engine = Engine.from_pretrained(checkpoints["qwen3_moe"], EngineConfig(max_num_seqs=8, max_model_len=64))
    window = RoutingWindow(trace_metadata(engine.model.config, "tiny"), max_tokens=4096)
    engine.observer = window
    engine.generate([("yard " * n).strip() for n in range(1, 9)], SamplingParams(max_tokens=8, temperature=0))
    return window


def placement_app(window, replacer, keys=(), min_tokens=16):
    app = build_openai_app()
    add_placement_routes(app)
    app.state.api_keys = keys
    app.state.placement = PlacementService(window, replacer, lambda: (0, 0), min_tokens,
                                           "" if replacer else "num_groups 0")
    return app


def post(app, body, key=None, raw=None):
    async def go():
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            if raw is not None:
                return await http.post("/v1/switchyard/placement", content=raw, headers=headers)
            return await http.post("/v1/switchyard/placement", json=body, headers=headers)

    return asyncio.run(go())


def test_a_dry_run_shows_the_current_and_proposed_numbers_and_applies_nothing(window):
    current = contiguous(LAYERS, 8, 2)
    response = post(placement_app(window, _NoSwitch(current)), {"dry_run": True, "min_gain": 0.0})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["applied"] is False and answer["held_out"] is True
    assert 1.0 <= answer["proposed"]["fan_out"] <= 2.0 and 1.0 <= answer["current"]["imbalance"] <= 2.0
    load = {side: answer[side]["fan_out"] * answer[side]["imbalance"] for side in ("current", "proposed")}
    assert answer["gain"] == pytest.approx(1 - load["proposed"] / load["current"], abs=1e-3)
    proposed = json.loads(answer["placement"])
    assert proposed["num_groups"] == 2 and proposed["layers"] == list(LAYERS)
    table = format_answer(answer)
    assert "current" in table and "proposed" in table and "dry run" in table
    # a threshold no proposal can pass: refused with the reason, even when not a dry run
    refused = post(placement_app(window, _NoSwitch(current)), {"dry_run": False, "min_gain": 1.0}).json()
    assert refused["applied"] is False and "below min_gain" in refused["reason"]


def test_an_explicit_placement_is_scored_against_the_current_one(window):
    current = contiguous(LAYERS, 8, 2)
    explicit = json.loads(round_robin(LAYERS, 8, 2).to_json())
    answer = post(placement_app(window, _NoSwitch(current)), {"placement": explicit}).json()
    assert answer["proposed"]["strategy"] == "round_robin" and answer["held_out"] is False
    assert answer["proposed"]["experts_to_load"] == 12  # per layer, 2 new experts in each of the 2 groups


@pytest.mark.parametrize("body,status,param", [
    ({"dry_run": "yes"}, 400, "dry_run"),
    ({"min_gain": "0.1"}, 400, "min_gain"),
    ({"dry_run": True, "force": True}, 400, "force"),
    ({"placement": {"version": 1}}, 400, "placement.strategy"),
    ({"placement": "contiguous"}, 400, "placement"),
])
def test_bad_bodies_get_openai_errors_naming_the_field(window, body, status, param):
    response = post(placement_app(window, _NoSwitch(contiguous(LAYERS, 8, 2))), body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


def test_a_placement_for_another_app_is_refused_naming_the_field(window):
    app = placement_app(window, _NoSwitch(contiguous(LAYERS, 8, 2)))
    for other, param in ((contiguous(LAYERS, 8, 4), "placement.num_groups"),
                         (contiguous((0, 1), 8, 2), "placement.layers")):
        response = post(app, {"placement": json.loads(other.to_json())})
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    bad = json.loads(contiguous(LAYERS, 8, 2).to_json())
    bad["groups"][1]["experts"]["2"] = [9]
    response = post(app, {"placement": bad})
    assert response.status_code == 400 and response.json()["error"]["param"] == "placement.groups[1].experts.2[0]"


def test_no_json_no_routing_no_groups_and_no_key_are_refused(window):
    app = placement_app(window, _NoSwitch(contiguous(LAYERS, 8, 2)))
    assert post(app, None, raw=b"{nope").status_code == 400
    few = post(placement_app(window, _NoSwitch(contiguous(LAYERS, 8, 2)), min_tokens=10**6), {})
    assert few.status_code == 409 and few.json()["error"]["code"] == "not_enough_routing"
    empty = post(placement_app(None, _NoSwitch(contiguous(LAYERS, 8, 2))), {})
    assert empty.status_code == 409
    no_groups = post(placement_app(window, None), {})
    assert no_groups.status_code == 400 and no_groups.json()["error"]["code"] == "replacement_unavailable"
    locked = placement_app(window, _NoSwitch(contiguous(LAYERS, 8, 2)), keys=("k",))
    assert post(locked, {}).status_code == 401 and post(locked, {}, key="k").status_code == 200


def test_place_live_prints_the_comparison_and_writes_the_proposal(window, tmp_path, capsys):
    from served_app import http_server
    from switchyard.cluster.cli import main

    app = placement_app(window, _NoSwitch(contiguous(LAYERS, 8, 2)), keys=("k",))
    out = tmp_path / "proposed.json"
    with http_server(app) as url:
        assert main(["place", "--live", url, "--api-key", "k", "--min-gain", "0", "-o", str(out)]) == 0
        printed = capsys.readouterr().out
        assert main(["place", "--live", url]) == 1  # no key
        assert "HTTP 401" in capsys.readouterr().err
    assert "proposed" in printed and "dry run" in printed and "candidate" in printed
    assert json.loads(out.read_text())["num_groups"] == 2
    with pytest.raises(SystemExit, match="--traces and --groups"):
        main(["place"])


def test_the_replace_benchs_phase_table_and_greedy_check():
    from switchyard.cluster.bench.replace import Phase, greedy_mismatches, phase_rows

    phase = Phase("p", 10.0, 12.0, ({"token_layers": 100, "group_messages": 200},
                                    {"token_layers": 160, "group_messages": 350}), 2.4)
    steps = [(9.5, 0.1, 4), (10.5, 0.2, 8), (12.0, 0.4, 8), (12.5, 1.0, 1)]  # (end, seconds, outputs)
    results = [(9.0, 10.5, (1, 2), "a"), (10.0, 11.0, (1, 2), "a"), (10.0, 11.5, (3,), None), (11.0, 13.0, (3,), "b")]
    row = phase_rows([phase], results, steps)[0]
    assert row == ["p", 2.0, 2, pytest.approx(300.0), pytest.approx(400.0), 8.0, 2.5, 2.4, 3, 1]
    assert greedy_mismatches(results) == (1, 0)
    assert greedy_mismatches(results + [(0, 0, (1, 2), "c")]) == (1, 1)


# -- the switch's steps, with the registry and the replicas in this process ----------------------------------
class _Remote:
    """`obj.method.remote(*args)` as an awaitable, for a stand-in of a Ray actor."""

    def __init__(self, call):
        self.remote = call


class _LocalActor:
    def __init__(self, obj):
        self._obj = obj

    def __getattr__(self, name):
        method = getattr(self._obj, name)

        async def call(*args):
            return method(*args)

        return _Remote(call)


class _Replica:
    """A replica's actor: `__ray_call__` runs the function with this replica's server as the serving one."""

    def __init__(self, server):
        self.server = server

        async def ray_call(fn, *args):
            from switchyard.cluster.deployments import expert_group as expert_deployment

            expert_deployment._SERVING = self.server
            return fn(None, *args)

        self.__ray_call__ = _Remote(ray_call)


def _replacer(checkpoints, current, switched):
    from switchyard.cluster.deployments.registry import ReplicaRegistry
    from switchyard.cluster.replacement.replacer import Replacer

    registry = ReplicaRegistry.__ray_actor_class__()
    servers = [ExpertGroupServer(str(checkpoints["qwen3_moe"]), current.experts_of_group(g)) for g in range(2)]
    for g, server in enumerate(servers):
        registry.register(f"g{g}", f"r{g}", _Replica(server))

    def between_steps(fn):
        import concurrent.futures

        future = concurrent.futures.Future()
        future.set_result(fn())
        return future

    replacer = Replacer(_LocalActor(registry), "d", ["g0", "g1"], current, 0, lambda p: p, switched.append,
                        between_steps, timeout_s=30)
    return replacer, registry, servers


def test_a_switch_loads_switches_then_drops_and_a_failed_load_changes_nothing(checkpoints):
    from switchyard.cluster.replacement.replacer import SwitchFailed

    current, new = contiguous(LAYERS, 8, 2), round_robin(LAYERS, 8, 2)
    switched = []
    replacer, registry, servers = _replacer(checkpoints, current, switched)
    report = asyncio.run(replacer.apply(new))
    assert switched == [new] and replacer.version == 1 and report.replicas == 2 and report.experts_loaded == 12
    assert registry.placement_state("d").needed() == (1,)
    for g, server in enumerate(servers):
        assert {k: sorted(v) for k, v in server.group.held().items()} == new.experts_of_group(g)

    # a replica that cannot load: aborted before the tables change, the registry back, extras dropped
    switched.clear()
    replacer, registry, servers = _replacer(checkpoints, current, switched)
    servers[1].ckpt = None  # its next load fails
    with pytest.raises(SwitchFailed, match="old placement serves on"):
        asyncio.run(replacer.apply(new))
    assert switched == [] and replacer.version == 0 and replacer.placement is current
    assert registry.placement_state("d").needed() == (0,)
    for g, server in enumerate(servers):
        assert {k: sorted(v) for k, v in server.group.held().items()} == current.experts_of_group(g)


def test_a_switch_whose_wait_timed_out_never_lands_later(checkpoints):
    """The engine thread runs the switch only after the router gave up waiting (a stuck step): the tables stay,
    the registry goes back to the old version, and the replacer's placement is the old one; all three agree."""
    from switchyard.cluster.replacement.replacer import SwitchFailed

    current, new = contiguous(LAYERS, 8, 2), round_robin(LAYERS, 8, 2)
    switched, held = [], []
    replacer, registry, _ = _replacer(checkpoints, current, switched)
    replacer.timeout_s = 0.2

    def between_steps(fn):  # the engine thread is busy: the switch runs later, once the wait gave up
        import concurrent.futures

        held.append(fn)
        return concurrent.futures.Future()

    replacer._call_between_steps = between_steps
    with pytest.raises(SwitchFailed, match="could not switch"):
        asyncio.run(replacer.apply(new))
    held[0]()  # the step ends, the engine thread runs the queued switch: a no-op now
    assert switched == [] and replacer.version == 0 and replacer.placement is current
    assert registry.placement_state("d").needed() == (0,)


def test_a_switch_that_landed_as_its_wait_timed_out_is_committed(checkpoints):
    """The engine thread switched the tables, but its answer came after the wait gave up: the registry must not go
    back to the old version under tables that use the new one; the switch is committed."""
    current, new = contiguous(LAYERS, 8, 2), round_robin(LAYERS, 8, 2)
    switched = []
    replacer, registry, _ = _replacer(checkpoints, current, switched)
    replacer.timeout_s = 0.2

    def between_steps(fn):  # switches at once, answers never (as if the answer were lost to the timeout)
        import concurrent.futures

        fn()
        return concurrent.futures.Future()

    replacer._call_between_steps = between_steps
    asyncio.run(replacer.apply(new))
    assert switched == [new] and replacer.version == 1 and replacer.placement is new
    assert registry.placement_state("d").needed() == (1,)
