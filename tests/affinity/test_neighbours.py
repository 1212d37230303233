import numpy as np
import pytest

from switchyard.router.affinity.aligned import AlignedRouting
from switchyard.router.affinity.neighbours import ensemble_scores, fit_neighbours, normalise_rows
from switchyard.router.affinity.prediction import top_k_of
from switchyard.router.affinity.synthetic import synthetic_trace


@pytest.fixture(scope="module")
def routing() -> AlignedRouting:
    return synthetic_trace(num_layers=4, num_experts=16, top_k=2, num_sequences=8, seq_len=32).aligned()


def routing_of(expert_ids: list[list[list[int]]], num_experts: int) -> AlignedRouting:
    ids = np.array(expert_ids)  # [L, T, k]
    num_layers, num_tokens, k = ids.shape
    return AlignedRouting(
        layers=np.arange(num_layers), seq_id=np.zeros(num_tokens, np.int64), pos=np.arange(num_tokens),
        expert_ids=ids, gate_weights=np.full(ids.shape, 1 / k, np.float32), num_experts=num_experts,
    )


def test_similarity_weighs_recent_layers_more():
    fit = routing_of([[[0, 1], [2, 3]], [[4, 5], [4, 6]]], num_experts=8)  # 2 layers, 2 fit tokens
    memory = fit_neighbours(fit, neighbours=1, decay=0.5)
    ids = np.array([[[0, 2]], [[4, 6]]])  # [h=2, T=1, k]: one expert shared with each at layer 0
    np.testing.assert_array_equal(memory.similarity(ids, layer=1), [[0.5 * 1 + 1, 0.5 * 1 + 2]])
    np.testing.assert_array_equal(memory.similarity(ids[:1], layer=0), [[1, 1]])


def test_a_fit_token_gets_its_own_next_experts(routing):
    memory = fit_neighbours(routing, neighbours=1)
    for l in range(routing.num_layers - 1):
        path = routing.expert_ids[: l + 1]  # [h, T, k]
        hot = routing.multi_hot()[: l + 1]  # [h, T, E]
        key = hot.transpose(1, 0, 2).reshape(routing.num_tokens, -1)
        _, first, count = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        unique = count[first.ravel()] == 1
        assert unique.any()
        for d in range(1, routing.num_layers - l):
            scores = memory.scores(path, l, d)
            predicted = np.sort(top_k_of(scores, routing.top_k), axis=1)
            actual = np.sort(routing.expert_ids[l + d], axis=1)
            np.testing.assert_array_equal(predicted[unique], actual[unique])
            # Tokens whose path is shared split the one vote: the mean of those tokens' picks.
            same = first.ravel()[:, None] == first.ravel()[None, :]  # [T, T]
            expected = (same / same.sum(1, keepdims=True)) @ routing.multi_hot()[l + d]
            np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_chunked_scores_equal_unchunked_and_ignore_fit_order(routing):
    fit, held = routing.expert_ids[:, :160], routing.expert_ids[:, 160:]
    memory = fit_neighbours(routing_of(fit.tolist(), 16), neighbours=7)
    whole = memory.scores(held[:3], layer=2, distance=1)
    for max_bytes in (1, 4 * 160 * 5, 4 * 160 * 33):  # 1, 5 and 33 evaluated tokens per chunk
        # The similarity, hence the neighbours chosen, is exact; the weighted sum may differ in the last bit.
        np.testing.assert_allclose(memory.scores(held[:3], 2, 1, max_bytes=max_bytes), whole, rtol=1e-6)
    shuffled = fit[:, np.random.default_rng(1).permutation(160)]
    np.testing.assert_allclose(fit_neighbours(routing_of(shuffled.tolist(), 16), 7).scores(held[:3], 2, 1), whole,
                               rtol=1e-5)


def test_scores_are_expected_picks(routing):
    memory = fit_neighbours(routing)
    scores = memory.scores(routing.expert_ids[:2], layer=1, distance=2)
    assert scores.shape == (routing.num_tokens, 16) and (scores >= 0).all()
    np.testing.assert_allclose(scores.sum(1), routing.top_k, rtol=1e-5)
    with pytest.raises(ValueError, match="MoE layers after"):
        memory.scores(routing.expert_ids[:3], layer=2, distance=2)
    with pytest.raises(ValueError, match="not one of"):
        memory.scores(routing.expert_ids[:1], layer=7, distance=1)
    with pytest.raises(ValueError, match="neighbours >= 1"):
        fit_neighbours(routing, neighbours=0)


def test_a_token_like_no_fit_token_gets_the_popular_experts():
    fit = routing_of([[[0, 1], [0, 2], [1, 2]], [[4, 5], [4, 6], [4, 5]]], num_experts=8)
    scores = fit_neighbours(fit, neighbours=2).scores(np.array([[[6, 7]]]), layer=0, distance=1)
    np.testing.assert_allclose(scores, [[0, 0, 0, 0, 1, 2 / 3, 1 / 3, 0]], rtol=1e-6)


def test_ensemble_normalises_each_predictor_first():
    assert normalise_rows(np.array([[0.0, 0.0], [-1.0, 3.0]])).tolist() == [[0, 0], [-0.25, 0.75]]
    votes, ridge = np.array([[4.0, 0.0, 0.0, 0.0]]), np.array([[0.0, 0.1, 0.1, -0.2]])
    np.testing.assert_allclose(ensemble_scores(votes, ridge, 2.0), [[1.0, 0.5, 0.5, -1.0]])
