import json

import numpy as np
import pytest

from switchyard.router.affinity.placement import Placement, PlacementError
from switchyard.router.affinity.strategies import contiguous, eplb, round_robin


def _document() -> dict:
    return json.loads(contiguous([2, 3], num_experts=4, num_groups=2).to_json())


def test_json_round_trip_and_lookups(tmp_path):
    holds = np.zeros((2, 2, 4), bool)
    holds[:, 0, [0, 1]] = True
    holds[:, 1, [2, 3]] = True
    holds[1, 1, 0] = True  # expert 0 of layer 3 replicated on group 1
    placement = Placement("test", (2, 3), holds)
    placement.save(tmp_path / "p.json")
    back = Placement.load(tmp_path / "p.json")
    np.testing.assert_array_equal(back.holds, holds)
    assert (back.strategy, back.layers, back.num_groups, back.num_experts) == ("test", (2, 3), 2, 4)
    assert back.groups_of(3, 0) == [0, 1] and back.groups_of(2, 0) == [0]
    assert back.experts_of_group(1) == {2: [2, 3], 3: [0, 2, 3]}
    document = json.loads(back.to_json())
    assert document["version"] == 1
    assert document["groups"][1] == {"name": "group-1", "experts": {"2": [2, 3], "3": [0, 2, 3]}}


@pytest.mark.parametrize(
    "break_it, field",
    [
        (lambda d: d.pop("num_groups"), "num_groups"),
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.update(num_experts="4"), "num_experts"),
        (lambda d: d.update(num_groups=3), "groups"),
        (lambda d: d["layers"].append("x"), "layers[2]"),
        (lambda d: d["groups"][1].pop("name"), "groups[1].name"),
        (lambda d: d["groups"][1]["experts"].update({"7": [1]}), "groups[1].experts.7"),
        (lambda d: d["groups"][0]["experts"]["3"].append(9), "groups[0].experts.3[2]"),
        (lambda d: d["groups"][0]["experts"]["3"].append(1), "groups[0].experts.3"),
        (lambda d: d["groups"][0]["experts"]["3"].remove(1), "groups[*].experts.3"),  # expert 1 unheld
        (lambda d: d["groups"][0].update(experts=[1, 2]), "groups[0].experts"),
    ],
)
def test_validation_names_the_bad_field(break_it, field):
    document = _document()
    break_it(document)
    with pytest.raises(PlacementError) as error:
        Placement.from_json(json.dumps(document))
    assert error.value.field == field and str(error.value).startswith(field)


def test_unheld_expert_message_says_which():
    document = _document()
    document["groups"][1]["experts"]["2"] = [3]
    with pytest.raises(PlacementError, match="expert 2 of layer 2 is held by no group"):
        Placement.from_json(json.dumps(document))


def test_contiguous_and_round_robin():
    c = contiguous(range(3), num_experts=8, num_groups=4)
    assert c.experts_of_group(1) == {0: [2, 3], 1: [2, 3], 2: [2, 3]}
    r = round_robin(range(3), num_experts=8, num_groups=4)
    assert r.experts_of_group(1)[2] == [1, 5]
    for p in (c, r):
        assert (p.replica_counts() == 1).all() and (p.slots_per_group() == 2).all()
    with pytest.raises(ValueError, match="must divide"):
        contiguous(range(3), num_experts=8, num_groups=3)


def test_eplb_placement_fills_equal_slots():
    popularity = np.random.default_rng(0).random((3, 16))
    p = eplb(popularity, [4, 5, 6], num_groups=4, replica_slots=4)
    assert p.strategy == "eplb" and p.layers == (4, 5, 6)
    assert p.holds.shape == (3, 4, 16)
    assert (p.replica_counts() >= 1).all()
    # 20 physical slots / 4 groups = 5 each (fewer only if EPLB put two replicas on one group).
    assert (p.slots_per_group() <= 5).all() and (p.replica_counts().sum(1) >= 19).all()
    with pytest.raises(ValueError, match="multiple of num_groups"):
        eplb(popularity, [4, 5, 6], num_groups=4, replica_slots=3)
