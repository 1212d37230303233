import numpy as np
import pytest

from switchyard.router.affinity.aligned import AlignedRouting
from switchyard.router.affinity.metrics import evaluate_placement
from switchyard.router.affinity.strategies import contiguous


def _routing(expert_ids) -> AlignedRouting:
    ids = np.array(expert_ids)  # [L, T, k]
    return AlignedRouting(
        layers=np.arange(len(ids)), seq_id=np.zeros(ids.shape[1], np.int64), pos=np.arange(ids.shape[1]),
        expert_ids=ids, gate_weights=np.full(ids.shape, 0.5, np.float32), num_experts=4,
    )


def test_hand_computed_numbers():
    # Groups: {0, 1} and {2, 3}. Layer 0 tokens visit {0}, {0, 1}, {1} groups; layer 1: {0}, {0}, {0, 1}.
    routing = _routing([[[0, 1], [0, 2], [2, 3]], [[0, 1], [1, 0], [3, 0]]])
    report = evaluate_placement(contiguous([0, 1], 4, 2), routing, hidden_size=10, bytes_per_element=2)
    np.testing.assert_allclose(report.fan_out, [4 / 3, 4 / 3])
    np.testing.assert_allclose(report.imbalance, [1.0, 5 / 3])  # layer 1 loads 5 and 1
    np.testing.assert_allclose(report.bytes_per_token, report.fan_out * 20)
    # New groups at layer 1: token 0 none, token 1 none ({0} after {0,1}), token 2 group 0 -> 1/3.
    np.testing.assert_allclose(report.group_switches, [1 / 3])
    assert report.mean_imbalance == pytest.approx(4 / 3)


def test_no_common_layers_is_an_error():
    with pytest.raises(ValueError, match="no common layers"):
        evaluate_placement(contiguous([5], 4, 2), _routing([[[0, 1]]]), hidden_size=1)
