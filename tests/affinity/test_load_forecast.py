import numpy as np
import pytest

from switchyard.router.affinity.affinity_placement import affinity_placement
from switchyard.router.affinity.load_forecast import as_expected_picks, load_forecast_error, relative_load_error
from switchyard.router.affinity.matrix import fit_affinity
from switchyard.router.affinity.neighbours import fit_neighbours
from switchyard.router.affinity.prediction import fit_predictor
from switchyard.router.affinity.strategies import contiguous
from switchyard.router.affinity.synthetic import synthetic_trace


def test_relative_load_error():
    assert relative_load_error(np.array([3.0, 1.0]), np.array([2.0, 2.0])) == pytest.approx(0.5)
    assert relative_load_error(np.array([2.0, 2.0]), np.array([2.0, 2.0])) == 0.0


def test_expected_picks_are_non_negative_and_sum_to_top_k():
    picks = as_expected_picks(np.array([[2.0, -1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]]), top_k=2)
    np.testing.assert_allclose(picks, [[1.0, 0.0, 1.0, 0.0], [0.5, 0.5, 0.5, 0.5]])


@pytest.fixture(scope="module")
def topical():
    """Routing with strong topics: a token's experts at layer l say a lot about l+1."""
    trace = synthetic_trace(num_layers=4, num_experts=16, top_k=2, num_sequences=16, seq_len=32, topic_stay=0.95,
                            topic_bonus=6.0)
    fit = trace.filter_rows("seq_id<8")
    matrix, aligned = fit_affinity(fit), fit.aligned()
    return matrix, fit_predictor(aligned, 2), fit_neighbours(aligned), trace.filter_rows("seq_id>=8").aligned()


def test_routing_forecasts_group_load_better_than_popularity(topical):
    matrix, predictor, neighbours, held_out = topical
    report = load_forecast_error(matrix, predictor, neighbours, held_out, affinity_placement(matrix, 4),
                                 batch_tokens=16, max_distance=2)
    assert report.distances.tolist() == [1, 2] and report.batch_tokens == 16
    assert (report.ensemble < report.popularity).all() and (report.transition < report.popularity).all()
    assert (report.ensemble >= 0).all()


def test_one_group_is_forecast_exactly(topical):
    matrix, predictor, neighbours, held_out = topical
    report = load_forecast_error(matrix, predictor, neighbours, held_out, contiguous(list(matrix.layers), 16, 1),
                                 batch_tokens=8, max_distance=1)
    # a single group always gets top_k picks per token: every source is exact
    np.testing.assert_allclose([report.popularity[0], report.transition[0], report.ensemble[0]], 0.0, atol=1e-6)  # float32 scores
    with pytest.raises(ValueError, match="batch_tokens"):
        load_forecast_error(matrix, predictor, neighbours, held_out, contiguous(list(matrix.layers), 16, 1), 0)
