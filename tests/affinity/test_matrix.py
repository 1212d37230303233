import numpy as np
import pytest

from switchyard.router.affinity.matrix import AffinityMatrix, fit_affinity
from switchyard.router.affinity.traces import TraceMetadata, concat_traces, trace_from_layer


def _tiny_trace():
    """3 tokens, 4 experts, top-2, layers 0 and 1."""
    meta = TraceMetadata("tiny", num_experts=4, top_k=2, layers=(0, 1))
    weights = np.full((3, 2), 0.5)
    layer0 = trace_from_layer(0, [0, 0, 1], [0, 1, 0], [[0, 1], [0, 2], [0, 1]], weights, meta)
    layer1 = trace_from_layer(1, [0, 0, 1], [0, 1, 0], [[2, 3], [3, 1], [2, 3]], weights, meta)
    return concat_traces([layer1, layer0])  # row order must not matter


def test_exact_values_on_a_tiny_trace():
    m = fit_affinity(_tiny_trace())
    np.testing.assert_allclose(m.popularity[0], [3 / 3, 2 / 3, 1 / 3, 0])
    assert m.coactivation[0, 0, 1] == pytest.approx(2 / 3) and m.coactivation[0, 1, 2] == 0
    # Expert 1 at layer 0 (tokens 0 and 2) is followed by {2, 3} both times: 4 picks, 2 each.
    np.testing.assert_allclose(m.transition[0, 1], [0, 0, 0.5, 0.5])
    # Expert 3 never picked at layer 0: its row falls back to layer 1's popularity / k.
    np.testing.assert_allclose(m.transition[0, 3], m.popularity[1] / 2)


def test_sanity_on_real_traces(flame):
    m = flame.matrix
    assert m.coactivation.shape == (8, 64, 64) and m.transition.shape == (7, 64, 64)
    np.testing.assert_allclose(m.popularity.sum(1), 6.0)  # every token picks top_k distinct experts
    np.testing.assert_allclose(m.coactivation, m.coactivation.transpose(0, 2, 1))
    np.testing.assert_allclose(np.einsum("lii->li", m.coactivation), m.popularity)
    np.testing.assert_allclose(m.coactivation.sum(2), m.popularity * 6)  # each pick co-occurs with k picks
    np.testing.assert_allclose(m.transition.sum(2), 1.0)
    assert (m.transition >= 0).all() and m.num_tokens.tolist() == [1024] * 8


def test_save_load_round_trip(tmp_path, flame):
    flame.matrix.save(tmp_path / "m.npz")
    back = AffinityMatrix.load(tmp_path / "m.npz")
    assert (back.num_experts, back.top_k) == (64, 6)
    for name in ("layers", "num_tokens", "popularity", "coactivation", "transition"):
        np.testing.assert_array_equal(getattr(back, name), getattr(flame.matrix, name))
    assert back.layer_index(5) == 3
    with pytest.raises(KeyError, match="layer 11"):
        back.layer_index(11)


def test_shape_mismatch_names_the_field():
    m = fit_affinity(_tiny_trace())
    with pytest.raises(ValueError, match="transition"):
        AffinityMatrix(m.layers, 4, 2, m.num_tokens, m.popularity, m.coactivation, m.transition[:, :3])
