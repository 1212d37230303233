"""Golden test: the example in deepseek-ai/EPLB's README must come out exactly."""

import numpy as np
import pytest

from switchyard.router.affinity.eplb import balanced_packing, rebalance_experts, replicate_experts
from switchyard.router.affinity.strategies import EplbHierarchy, eplb

README_WEIGHT = np.array(
    [
        [90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
        [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27],
    ]
)
# print(phy2log) in the README: 2 layers, 16 physical experts on 2 nodes x 4 GPUs.
README_PHY2LOG = np.array(
    [
        [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
        [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1],
    ]
)


def test_readme_example_hierarchical():
    result = rebalance_experts(README_WEIGHT, num_physical=16, num_expert_groups=4, num_nodes=2, num_gpus=8)
    np.testing.assert_array_equal(result.phy2log, README_PHY2LOG)
    # log2phy inverts phy2log; logcnt counts replicas.
    for layer in range(2):
        for expert in range(12):
            slots = result.log2phy[layer, expert]
            slots = slots[slots >= 0]
            assert len(slots) == result.logcnt[layer, expert]
            assert (result.phy2log[layer, slots] == expert).all()
    assert (result.logcnt.sum(1) == 16).all()


def test_readme_weights_through_the_placement_wrapper():
    hierarchy = EplbHierarchy(num_nodes=2, num_expert_groups=4)
    placement = eplb(README_WEIGHT.astype(float), [0, 1], num_groups=8, replica_slots=4, hierarchy=hierarchy)
    assert placement.strategy == "eplb-hierarchical"
    for gpu in range(8):
        expected = {layer: sorted(set(README_PHY2LOG[layer, 2 * gpu : 2 * gpu + 2].tolist())) for layer in (0, 1)}
        assert placement.experts_of_group(gpu) == expected


def test_global_policy_when_groups_do_not_split_over_nodes():
    # 3 expert groups over 2 nodes -> global policy, same as one node and one group.
    a = rebalance_experts(README_WEIGHT, 16, num_expert_groups=3, num_nodes=2, num_gpus=8)
    b = rebalance_experts(README_WEIGHT, 16, num_expert_groups=1, num_nodes=1, num_gpus=8)
    np.testing.assert_array_equal(a.phy2log, b.phy2log)


def test_building_blocks():
    pack, rank = balanced_packing(np.array([[5.0, 4, 3, 2, 1, 1]]), num_packs=2)
    assert pack.tolist() == [[0, 1, 1, 0, 0, 1]] and sorted(rank[0].tolist()) == [0, 0, 1, 1, 2, 2]
    phy2log, rank, logcnt = replicate_experts(np.array([[10.0, 1, 4]]), num_physical=5)
    assert phy2log.tolist() == [[0, 1, 2, 0, 0]] and logcnt.tolist() == [[3, 1, 1]]
    with pytest.raises(ValueError, match="evenly"):
        balanced_packing(np.ones((1, 5)), num_packs=2)
