import numpy as np
import pytest

from switchyard.router.affinity.row_filter import Clause, FilterSyntaxError, parse_filter


def test_parses_clauses_joined_by_and():
    parsed = parse_filter(" seq_id<16 and layer >= 3 and pos!=-1")
    assert parsed.clauses == (Clause("seq_id", "<", 16), Clause("layer", ">=", 3), Clause("pos", "!=", -1))


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("seq_id<2", [True, True, False, False]),
        ("seq_id<=2", [True, True, True, False]),
        ("seq_id>2", [False, False, False, True]),
        ("seq_id>=2", [False, False, True, True]),
        ("seq_id==1", [False, True, False, False]),
        ("seq_id!=1 and layer==7", [True, False, True, False]),
    ],
)
def test_masks(expression, expected):
    columns = {"seq_id": np.array([0, 1, 2, 3]), "layer": np.array([7, 7, 7, 8])}
    assert parse_filter(expression).mask(columns).tolist() == expected


@pytest.mark.parametrize(
    "garbage, says",
    [
        ("", "empty filter"),
        ("seq_id", "incomplete clause"),
        ("seq_id<", "incomplete clause"),
        ("seq<16", "unknown column 'seq'"),
        ("seq_id=16", "unexpected '=16'"),
        ("seq_id<abc", "expected an integer"),
        ("seq_id<16 or pos<3", "expected 'and'"),
        ("seq_id<1.5", "unexpected '.5'"),
        ("__import__('os')", "unexpected"),
        ("seq_id<16 and", "incomplete clause"),
        ("16<seq_id", "unknown column '16'"),
    ],
)
def test_rejects_garbage_with_a_clear_error(garbage, says):
    with pytest.raises(FilterSyntaxError, match=says.replace("(", r"\(").replace(".", r"\.")):
        parse_filter(garbage)
