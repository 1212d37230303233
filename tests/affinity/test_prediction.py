import numpy as np
import pytest

from switchyard.router.affinity.matrix import fit_affinity
from switchyard.router.affinity.neighbours import fit_neighbours
from switchyard.router.affinity.placement import Placement
from switchyard.router.affinity.prediction import (
    fit_predictor,
    forecast_group_load,
    prediction_recall,
    recall_at_k,
    top_k_of,
    transition_scores,
)
from switchyard.router.affinity.synthetic import synthetic_trace


@pytest.fixture(scope="module")
def synthetic():
    trace = synthetic_trace(num_layers=4, num_experts=16, top_k=2, num_sequences=16, seq_len=32, topic_stay=0.9)
    return fit_affinity(trace.filter_rows("seq_id<8")), trace.filter_rows("seq_id<8").aligned(), \
        trace.filter_rows("seq_id>=8").aligned()


def test_recall_at_k():
    predicted = np.array([[1, 2, 3], [4, 5, 6]])
    actual = np.array([[3, 2, 9], [7, 8, 9]])
    assert recall_at_k(predicted, actual) == pytest.approx((2 / 3 + 0) / 2)
    assert top_k_of(np.array([[0.1, 0.5, 0.5, 0.2]]), 2).tolist() == [[1, 2]]


def test_transition_scores_are_expected_picks(synthetic):
    matrix, _, held_out = synthetic
    for distance in (1, 2, 3):
        scores = transition_scores(matrix, held_out.expert_ids[0], layer=0, distance=distance)  # [T, E]
        assert scores.shape == (held_out.num_tokens, 16)
        np.testing.assert_allclose(scores.sum(1), 2.0)
    with pytest.raises(ValueError, match="past the last layer"):
        transition_scores(matrix, held_out.expert_ids[0], layer=2, distance=2)


def test_predictors_beat_popularity_on_structured_traces(synthetic):
    matrix, fit, held_out = synthetic
    predictor = fit_predictor(fit, max_distance=2)
    assert predictor.weights.shape == (4, 2, 2 * 2 * 16 + 1, 16)  # [L, D, F, E]
    report = prediction_recall(matrix, predictor, fit_neighbours(fit), held_out, max_distance=2)
    assert report.distances.tolist() == [1, 2]
    assert (report.transition > report.popularity + 0.1).all()
    assert (report.fitted >= report.transition - 0.02).all()
    assert (report.neighbours > report.popularity + 0.1).all()
    assert (report.ensemble >= report.fitted - 0.02).all()


def test_forecast_group_load_splits_replicas_evenly():
    holds = np.zeros((1, 2, 3), bool)
    holds[0, 0, [0, 1]] = True
    holds[0, 1, [1, 2]] = True  # expert 1 on both groups
    placement = Placement("t", (4,), holds)
    picks = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])  # [T, E]
    np.testing.assert_allclose(forecast_group_load(picks, placement, 4), [1.5, 1.5])
    np.testing.assert_allclose(forecast_group_load(picks.sum(0), placement, 4), [1.5, 1.5])
