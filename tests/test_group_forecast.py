"""The groups' load forecast: pure functions on synthetic traces, the router's per-request routing counts, the
prompt-only guess on tiny models, and the live forecast on a single-process engine."""

import numpy as np
import pytest
import torch

from switchyard.cluster.autoscaling.forecast import (
    blended_picks,
    group_picks,
    propagated_picks,
    relative_error,
    rows_per_token,
    top_k_recall,
    visit_probability,
)
from switchyard.cluster.autoscaling.forecast_live import LiveForecast, holds_of_tables, tokens_per_s_per_seq
from switchyard.configs.engine import EngineConfig
from switchyard.configs.serve import AppConfig
from switchyard.router.affinity.aligned import multi_hot
from switchyard.router.affinity.dispatch import DispatchTables
from switchyard.router.affinity.matrix import fit_affinity
from switchyard.router.affinity.prediction import transition_scores
from switchyard.router.affinity.strategies import contiguous
from switchyard.router.affinity.synthetic import synthetic_trace
from switchyard.router.engine import Engine
from switchyard.router.gates import Routing
from switchyard.router.prompt_forecast import first_moe_index, prompt_picks
from switchyard.router.request_routing import RequestRouting
from switchyard.router.sampling import SamplingParams


def test_propagated_picks_is_the_transition_chain():
    trace = synthetic_trace(num_layers=4, num_experts=8, top_k=2, seed=1)
    matrix = fit_affinity(trace)
    ids = trace.aligned().expert_ids[0][:5]  # [5, k] at layer 0
    first = multi_hot(ids, 8).astype(np.float64)  # [5, E]
    picks = propagated_picks(first, matrix.transition, 2)  # [5, L, E]
    for d in range(1, 4):
        np.testing.assert_allclose(picks[:, d], transition_scores(matrix, ids, 0, d), rtol=1e-9)
    np.testing.assert_allclose(picks.sum(-1), 2.0)


def test_visits_count_rows_as_the_dispatcher_does():
    holds = np.zeros((1, 2, 4), bool)
    holds[0, 0, :2] = holds[0, 1, 2:] = True
    # every pick in group 0: one row there, none in group 1
    assert visit_probability(group_picks(np.array([[[1.0, 1.0, 0, 0]]]), holds), 2).tolist() == [[[1.0, 0.0]]]
    # a group that holds every expert gets one row per token and layer whatever the picks
    whole = np.ones((3, 1, 4), bool)
    picks = np.random.default_rng(0).dirichlet(np.ones(4), size=(5, 3)) * 2
    np.testing.assert_allclose(rows_per_token(picks, whole, 2), 3.0)
    # a replicated expert's picks are split over its holders
    holds[0, 1, 0] = True
    assert group_picks(np.array([[[2.0, 0, 0, 0]]]), holds).tolist() == [[[1.0, 1.0]]]


def test_blending_moves_from_popularity_to_the_requests_own_routing():
    popularity = np.array([[1.0, 1.0, 0.0, 0.0]])
    own = np.array([[[0.0, 0.0, 10.0, 10.0]]])  # 10 tokens, top-2
    np.testing.assert_allclose(blended_picks(own * 0, np.array([0.0]), popularity, 8.0)[0], popularity)
    mixed = blended_picks(own, np.array([10.0]), popularity, 10.0)[0]
    np.testing.assert_allclose(mixed, [[0.5, 0.5, 0.5, 0.5]])  # half its own picks, half the prior
    np.testing.assert_allclose(mixed.sum(), 2.0)


def test_relative_error_and_recall():
    assert relative_error(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == pytest.approx(0.5)
    assert relative_error(np.array([1.0]), np.array([0.0])) is None
    assert top_k_recall(np.array([[3.0, 2, 1, 0]]), np.array([[0.0, 2, 3, 1]]), 2) == pytest.approx(0.5)


def test_a_sequences_own_routing_forecasts_its_later_group_load_better_than_popularity():
    """On synthetic traces whose sequences prefer topics: the first half of each sequence's routing forecasts the
    groups its second half visits better than the layer's popularity does."""
    trace = synthetic_trace(num_layers=4, num_experts=16, top_k=2, num_sequences=16, seq_len=64, seed=3,
                            topic_bonus=5.0)
    aligned = trace.aligned()
    holds = contiguous((0, 1, 2, 3), 16, 4).holds
    hot = multi_hot(aligned.expert_ids, 16)  # [L, T, E]
    seq = np.repeat(np.arange(16), 64)
    first, second = (np.arange(len(seq)) % 64) < 32, (np.arange(len(seq)) % 64) >= 32
    popularity = fit_affinity(trace).popularity
    own_err, pop_err = [], []
    for s in range(16):
        counts = hot[:, (seq == s) & first].sum(1)[None]  # [1, L, E]
        mine = rows_per_token(blended_picks(counts, np.array([32.0]), popularity, 8.0), holds, 2)[0]
        prior = rows_per_token(popularity[None], holds, 2)[0]
        later = hot[:, (seq == s) & second]  # [L, 32, E] picks of the later tokens
        actual = (np.einsum("lte,lge->ltg", later, holds.astype(float)) > 0).sum(0).mean(0)  # rows per token
        own_err.append(relative_error(mine, actual))
        pop_err.append(relative_error(prior, actual))
    assert np.mean(own_err) < 0.7 * np.mean(pop_err), (np.mean(own_err), np.mean(pop_err))


class _Batch:
    def __init__(self, numbers):
        self.token_seq_numbers = torch.tensor(numbers)


def test_request_routing_counts_each_sequence_and_fits_the_matrix_as_offline():
    trace = synthetic_trace(num_layers=3, num_experts=8, top_k=2, num_sequences=4, seq_len=16, seed=2)
    aligned = trace.aligned()
    recorder = RequestRouting((0, 1, 2), 8, 2, half_life_tokens=float("inf"))
    numbers = np.repeat(np.arange(4), 16)
    for start in range(0, 64, 8):  # 8 steps of 8 tokens; the same tensor for every layer of a step
        batch = _Batch(numbers[start:start + 8])
        for l in range(3):
            ids = torch.from_numpy(aligned.expert_ids[l][start:start + 8].astype(np.int64))
            recorder.observe(l, batch, Routing(ids, torch.ones(ids.shape)))
    recorder.drain()
    counts, tokens = recorder.request_counts([1, 3, 99])
    hot = multi_hot(aligned.expert_ids, 8)  # [L, T, E]
    np.testing.assert_allclose(counts[0], hot[:, numbers == 1].sum(1))
    assert tokens.tolist() == [16, 16, 0] and counts[2].sum() == 0
    matrix = fit_affinity(trace)
    np.testing.assert_allclose(recorder.popularity(), matrix.popularity, rtol=1e-9)
    np.testing.assert_allclose(recorder.transition(), matrix.transition, rtol=1e-9)
    recorder.forget_except({3})
    assert list(recorder.per_seq) == [3]


def test_holds_of_the_dispatch_tables_are_the_placements():
    placement = contiguous((1, 3), 8, 2)
    placement.holds[0, 1, 0] = True  # a replicated expert
    assert (holds_of_tables(DispatchTables.from_placement(placement)) == placement.holds).all()
    assert tokens_per_s_per_seq([0.1, 0.2, 0.5]) == pytest.approx(5.0) and tokens_per_s_per_seq([]) == 0.0


@pytest.mark.parametrize("family", ["mixtral", "deepseek_v3"])
def test_prompt_picks_are_the_first_gate_on_the_embeddings(checkpoints, family):
    engine = Engine.from_pretrained(checkpoints[family], EngineConfig(max_num_seqs=4, max_model_len=64))
    model, cfg = engine.model, engine.model.config
    prompts = [[5, 6, 7, 8, 9], [11, 12]]
    picks = prompt_picks(model, prompts).numpy()  # [2, E]
    np.testing.assert_allclose(picks.sum(1), cfg.top_k, rtol=1e-6)
    index = first_moe_index(model)
    assert index == cfg.moe_layers[0]
    for prompt, row in zip(prompts, picks):
        _, routing = model.moe_input(index, model.embed(torch.tensor(prompt)))
        expected = multi_hot(routing.expert_ids.numpy(), cfg.num_experts).mean(0)  # rows sum to top_k
        np.testing.assert_allclose(row, expected, rtol=1e-6)


def test_live_forecast_on_an_engine(checkpoints):
    engine = Engine.from_pretrained(checkpoints["mixtral"], EngineConfig(max_num_seqs=4, max_model_len=64))
    cfg = engine.model.config
    placement = contiguous(cfg.moe_layers, cfg.num_experts, 2)
    routing = RequestRouting(cfg.moe_layers, cfg.num_experts, cfg.top_k)
    forecast = LiveForecast(routing, engine.model, lambda: placement.holds)
    engine.observer = routing
    params = SamplingParams(max_tokens=8, temperature=0.0)
    running = [engine.add_request([3, 4, 5, 6], params), engine.add_request([7, 8, 9], params)]
    waiting = engine.make_sequence([10, 11, 12], params)  # not given to the engine: forecast from its prompt
    engine.step()  # both prompts prefilled
    out = forecast.tick(running, [waiting], 10.0, [0.0, 0.0])
    # three requests, each with at most one row per group per MoE layer, at least one group per layer
    layers = len(cfg.moe_layers)
    assert out.shape == (2,) and 3 * layers * 10 <= out.sum() <= 3 * layers * 2 * 10 + 1e-9
    assert set(routing.per_seq) == {s.number for s in running}
    assert forecast.snapshot()["error_all_groups"] is None  # nothing measured yet
    forecast.tick(running, [], 10.0, [float(out[0]), float(out[1]) * 2])
    snap = forecast.snapshot()
    assert snap["error"][0] == pytest.approx(0.0) and snap["error"][1] == pytest.approx(0.5)
    assert snap["ticks"] == 1


def test_forecast_is_an_option_of_the_app_config():
    auto = AppConfig.model_validate({"model": "m", "expert_pool": {"autoscaling": {"forecast": True}}})
    assert auto.expert_pool.autoscaling.forecast is True
    assert "forecast" not in auto.expert_pool.autoscaling.to_serve()  # not Serve's field: the router's
    with pytest.raises(ValueError, match="forecast"):
        AppConfig.model_validate({"model": "m", "expert_pool": {"autoscaling": {"forecast": "sometimes"}}})


@pytest.mark.ray
@pytest.mark.slow
def test_a_router_with_the_forecast_serves_it_in_stats_and_metrics(ray_serve, checkpoints):
    """Deployed with `forecast: true`: answers equal the single-process engine's, the floor thread forecasts each
    group's rows/s from the requests it holds, and stats and /metrics show forecast, load and error per group."""
    import asyncio
    import time

    import httpx
    from prometheus_client.parser import text_string_to_metric_families
    from ray import serve

    from switchyard.cluster.app import build_app

    name = "forecast"
    model = checkpoints["mixtral"]
    prompts = [[3 + i, 4 + i, 5 + i, 6] for i in range(6)]
    engine = Engine.from_pretrained(model, EngineConfig(max_num_seqs=8, max_model_len=64))
    expected = [o.text for o in engine.generate(prompts, SamplingParams(max_tokens=24, temperature=0.0))]
    config = {"model": str(model), "served_model_name": "demo", "name": name, "num_groups": 2,
              "router": {"transport": "actor", "max_num_seqs": 8, "max_model_len": 64},
              "router_pool": {"num_cpus": 0.5, "torch_threads": 1},
              "expert_pool": {"num_cpus": 0.25, "torch_threads": 1, "autoscaling": {"max_replicas": 1,
                                                                                     "forecast": True}}}
    serve.run(build_app(config), name=name, route_prefix=f"/{name}")
    url = f"{ray_serve}/{name}"
    try:
        async def send_all(polls: list):
            async with httpx.AsyncClient(timeout=120) as client:
                async def poll():  # the forecast while the requests run
                    while True:
                        polls.append((await client.get(f"{url}/v1/switchyard/stats")).json()["forecast"])
                        await asyncio.sleep(0.3)

                poller = asyncio.ensure_future(poll())
                replies = await asyncio.gather(*[client.post(f"{url}/v1/completions", json={
                    "model": "demo", "prompt": p, "max_tokens": 24, "temperature": 0}) for p in prompts])
                poller.cancel()
                return replies

        polls, deadline = [], time.monotonic() + 90
        while time.monotonic() < deadline and not any(sum(s["forecast_rows_per_s"]) > 0 for s in polls):
            replies = asyncio.run(send_all(polls))
            assert [r.status_code for r in replies] == [200] * len(prompts)
            texts = [r.json()["choices"][0]["text"] for r in replies]
            assert texts == expected
        # a forecast was made while requests ran (the floor thread ticks once a second)
        assert any(sum(s["forecast_rows_per_s"]) > 0 for s in polls), polls[-3:]
        stats = polls[-1]
        assert len(stats["forecast_rows_per_s"]) == 2 and len(stats["measured_rows_per_s"]) == 2
        assert len(stats["error"]) == 2
        families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text)}
        for metric in ("switchyard_group_forecast_rows_per_second", "switchyard_group_load_rows_per_second"):
            groups = {sample.labels.get("group") for sample in families[metric].samples
                      if sample.labels.get("app") == name}
            assert groups == {"0", "1"}, (metric, groups)
    finally:
        serve.delete(name)
