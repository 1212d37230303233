import numpy as np

from switchyard.router.affinity.affinity_placement import affinity_placement
from switchyard.router.affinity.matrix import fit_affinity
from switchyard.router.affinity.plot import group_order, plot_layer
from switchyard.router.affinity.synthetic import synthetic_trace

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_writes_pngs_with_and_without_a_placement(tmp_path):
    matrix = fit_affinity(synthetic_trace(num_layers=2, num_experts=16, top_k=2))
    placement = affinity_placement(matrix, num_groups=4)
    plot_layer(matrix, 0, tmp_path / "grouped.png", placement)
    plot_layer(matrix, 1, tmp_path / "last-layer.png")  # no next layer: C only
    for name in ("grouped.png", "last-layer.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_group_order_puts_each_group_together():
    matrix = fit_affinity(synthetic_trace(num_layers=1, num_experts=16, top_k=2))
    placement = affinity_placement(matrix, num_groups=4)
    order, boundaries = group_order(placement, 0, 16)
    assert sorted(order.tolist()) == list(range(16)) and boundaries.tolist() == [4, 8, 12]
    first_group = np.argmax(placement.holds[0], axis=0)[order]
    assert (np.diff(first_group) >= 0).all()
