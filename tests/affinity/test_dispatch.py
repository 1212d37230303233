import numpy as np
import torch

from switchyard.router.affinity.dispatch import DispatchTables, assign_replicas, water_fill
from switchyard.router.affinity.placement import Placement


def _tables() -> DispatchTables:
    """One layer (id 7), 3 groups, 6 experts: group g holds 2g, 2g+1; expert 0 also on groups 1, 2."""
    holds = np.zeros((1, 3, 6), bool)
    for g in range(3):
        holds[0, g, [2 * g, 2 * g + 1]] = True
    holds[0, [1, 2], 0] = True
    return DispatchTables.from_placement(Placement("t", (7,), holds))


def test_tables_list_holders_padded():
    tables = _tables()
    assert tables.replica_groups.shape == (1, 6, 3)  # [L, E, max_replicas]
    assert tables.replica_groups[0, 0].tolist() == [0, 1, 2]
    assert tables.replica_groups[0, 3].tolist() == [1, -1, -1]
    assert tables.replica_count[0].tolist() == [3, 1, 1, 1, 1, 1]


def test_replica_goes_where_the_token_already_goes_even_if_busier():
    load = torch.tensor([0.0, 100.0, 0.0])
    groups = assign_replicas(torch.tensor([[0, 3]]), 7, _tables(), load)  # expert 3 lives only on group 1
    assert groups.tolist() == [[1, 1]]
    assert load.tolist() == [0.0, 102.0, 0.0]


def test_among_used_groups_the_least_loaded():
    load = torch.tensor([0.0, 5.0, 1.0])
    groups = assign_replicas(torch.tensor([[0, 3, 4]]), 7, _tables(), load)  # token uses groups 1 and 2
    assert groups[0, 0] == 2


def test_otherwise_least_loaded_replica_with_load_updated_as_it_goes():
    load = torch.tensor([3.0, 0.0, 1.0])
    groups = assign_replicas(torch.tensor([[0]] * 5), 7, _tables(), load)
    assert sorted(groups.flatten().tolist()) == [1, 1, 1, 2, 2]  # water level 3
    assert load.tolist() == [3.0, 3.0, 3.0]


def test_every_choice_is_a_holder_and_prefers_used_groups():
    rng = np.random.default_rng(1)
    holds = np.zeros((1, 4, 16), bool)
    holds[0, rng.permutation(16) % 4, np.arange(16)] = True
    holds[0, rng.integers(0, 4, 6), rng.integers(0, 16, 6)] = True
    tables = DispatchTables.from_placement(Placement("r", (0,), holds))
    ids = torch.from_numpy(np.argsort(rng.random((64, 16)), axis=1)[:, :4])  # [T, k] distinct
    load = torch.zeros(4)
    groups = assign_replicas(ids, 0, tables, load).numpy()
    assert holds[0, groups, ids.numpy()].all()
    assert load.sum() == ids.numel()
    single = holds[0].sum(0)[ids.numpy()] == 1  # [T, k]
    for t in range(len(ids)):
        forced = set(groups[t, single[t]].tolist())
        for j in np.flatnonzero(~single[t]):
            holders = set(np.flatnonzero(holds[0, :, ids[t, j]]).tolist())
            if holders & forced:
                assert groups[t, j] in forced


def test_water_fill_matches_one_at_a_time():
    rng = np.random.default_rng(0)
    load = np.full((40, 5), np.inf)  # [n, R], rows with fewer bins padded with inf
    items = rng.integers(0, 30, size=40)
    for row in range(40):
        bins = rng.integers(1, 6)
        load[row, :bins] = rng.integers(0, 10, size=bins)
    counts = water_fill(torch.from_numpy(load), torch.from_numpy(items)).numpy()
    for row in range(40):
        slow = load[row].copy()
        for _ in range(items[row]):
            slow[np.argmin(slow)] += 1
        bins = np.isfinite(load[row])
        assert counts[row].sum() == items[row] and (counts[row][~bins] == 0).all()
        np.testing.assert_array_equal(np.sort(load[row][bins] + counts[row][bins]), np.sort(slow[bins]))
