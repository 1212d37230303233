import itertools

import numpy as np
import pytest

from switchyard.router.affinity.affinity_placement import AffinityOptions, affinity_placement
from switchyard.router.affinity.alignment import align_group_labels, group_flow, linear_assignment
from switchyard.router.affinity.eplb import balanced_packing
from switchyard.router.affinity.matrix import fit_affinity
from switchyard.router.affinity.metrics import evaluate_placement
from switchyard.router.affinity.partition import inside_mass, partition_layer
from switchyard.router.affinity.strategies import contiguous
from switchyard.router.affinity.synthetic import synthetic_trace


@pytest.fixture(scope="module")
def synthetic():
    trace = synthetic_trace(num_layers=4, num_experts=32, top_k=4, num_sequences=16, seq_len=32, num_topics=8)
    return fit_affinity(trace.filter_rows("seq_id<8")), trace.filter_rows("seq_id>=8").aligned()


def test_partition_is_equal_size_balanced_and_beats_its_start(synthetic):
    matrix, _ = synthetic
    c, p = matrix.coactivation[0], matrix.popularity[0]
    groups = partition_layer(c, p, num_groups=4, balance_tolerance=0.05)
    assert np.bincount(groups).tolist() == [8, 8, 8, 8]
    load = np.bincount(groups, weights=p)
    start = balanced_packing(p[None], 4)[0][0]
    assert load.max() <= max(1.05 * load.mean(), np.bincount(start, weights=p).max()) + 1e-12
    assert inside_mass(c, groups) > 1.5 * inside_mass(c, start)


def test_affinity_beats_contiguous_on_held_out_synthetic_traces(synthetic):
    matrix, held_out = synthetic
    layers = list(matrix.layers)
    affinity = evaluate_placement(affinity_placement(matrix, 4), held_out, hidden_size=8)
    baseline = evaluate_placement(contiguous(layers, 32, 4), held_out, hidden_size=8)
    assert affinity.mean_fan_out < 0.8 * baseline.mean_fan_out
    assert affinity.mean_imbalance < 1.3
    unaligned = affinity_placement(matrix, 4, options=AffinityOptions(align_layers=False))
    switches = evaluate_placement(unaligned, held_out, hidden_size=8).mean_group_switches
    assert affinity.mean_group_switches < switches


def test_replicas_use_equal_slots_and_cut_fan_out(synthetic):
    matrix, held_out = synthetic
    plain = affinity_placement(matrix, 4)
    replicated = affinity_placement(matrix, 4, replica_slots=8)
    extra = replicated.slots_per_group() - 8  # [L, G]
    assert (extra >= 0).all() and (extra <= 2).all() and extra.sum() > 0
    assert (replicated.holds >= plain.holds).sum() > 0 and (replicated.replica_counts() >= 1).all()
    with_replicas = evaluate_placement(replicated, held_out, hidden_size=8).mean_fan_out
    assert with_replicas < evaluate_placement(plain, held_out, hidden_size=8).mean_fan_out
    with pytest.raises(ValueError, match="multiple of num_groups"):
        affinity_placement(matrix, 4, replica_slots=6)


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_linear_assignment_is_optimal(n):
    cost = np.random.default_rng(n).random((n, n))
    best = min(sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(n)))
    columns = linear_assignment(cost)
    assert sorted(columns.tolist()) == list(range(n))
    assert cost[np.arange(n), columns].sum() == pytest.approx(best)


def test_alignment_only_relabels_and_keeps_tokens_on_their_group(synthetic):
    matrix, _ = synthetic
    raw = affinity_placement(matrix, 4, options=AffinityOptions(align_layers=False)).holds
    aligned = align_group_labels(raw, matrix.popularity, matrix.transition, matrix.top_k)
    for l in range(len(raw)):  # same groups, other numbers
        assert sorted(map(tuple, raw[l].tolist())) == sorted(map(tuple, aligned[l].tolist()))

    def staying(holds):
        return sum(np.trace(group_flow(holds[l], holds[l + 1], matrix.popularity[l], matrix.transition[l], 4))
                   for l in range(len(holds) - 1))

    assert staying(aligned) >= staying(raw)


def test_deepseek_sized_layers_have_the_right_shapes():
    """256 experts into 64 groups with 64 replica slots (the 61-layer timing is scripts/place_scale_bench.py)."""
    trace = synthetic_trace(num_layers=2, num_experts=256, top_k=8, num_sequences=8, seq_len=64, num_topics=32)
    placement = affinity_placement(fit_affinity(trace), num_groups=64, replica_slots=64)
    assert placement.holds.shape == (2, 64, 256)
    assert (placement.replica_counts() >= 1).all()
    assert ((placement.slots_per_group() >= 4) & (placement.slots_per_group() <= 5)).all()
