"""Re-placement from recent routing (router/affinity/rolling.py): proposals, label matching, the threshold."""

import numpy as np
import pytest

from switchyard.router.affinity.metrics import evaluate_placement
from switchyard.router.affinity.placement import Placement
from switchyard.router.affinity.rolling import (PlacementScore, check_compatible, compare, experts_to_load,
                                                match_labels, propose, replayed_fan_out, replica_slots_of,
                                                worth_applying)
from switchyard.router.affinity.strategies import contiguous, eplb, round_robin
from switchyard.router.affinity.synthetic import synthetic_trace


@pytest.fixture(scope="module")
def trace():
    return synthetic_trace(num_layers=3, num_experts=16, top_k=2, num_sequences=16, seq_len=32, num_topics=4)


def test_a_proposal_beats_the_contiguous_split_on_held_out_sequences_and_keeps_balance(trace):
    current = contiguous(range(3), 16, 4)
    proposal = propose(trace, current)
    assert proposal.held_out and set(proposal.candidates) == {"eplb", "affinity", "affinity-robust"}
    # the synthetic topics make co-activation informative: the pick has fewer groups per token
    assert proposal.proposed.fan_out < proposal.current.fan_out and proposal.gain > 0.05
    eplb_imbalance = proposal.candidates["eplb"].imbalance
    assert proposal.proposed.imbalance <= max(proposal.current.imbalance, eplb_imbalance) + 1e-9
    assert proposal.proposed == min((c for c in proposal.candidates.values()
                                     if c.imbalance <= max(proposal.current.imbalance, eplb_imbalance) + 1e-9),
                                    key=lambda c: c.fan_out)
    # the scored rows are the odd sequences: the current placement's number is its real one there
    odd = trace.select(np.isin(trace.seq_id, np.unique(trace.seq_id)[1::2])).aligned()
    assert proposal.current.fan_out == pytest.approx(evaluate_placement(current, odd, 1).mean_fan_out)
    assert proposal.placement.num_groups == 4 and (proposal.placement.slots_per_group() == 4).all()


def test_match_labels_moves_nothing_when_the_proposal_is_the_current_placement_relabelled():
    current = contiguous(range(2), 8, 4)
    shuffled = Placement("shuffled", current.layers, current.holds[:, [2, 0, 3, 1]])
    matched = match_labels(current, shuffled)
    assert (matched.holds == current.holds).all() and experts_to_load(current, matched) == 0
    assert experts_to_load(current, shuffled) == 16


def test_match_labels_changes_neither_fan_out_nor_balance(trace):
    current = contiguous(range(3), 16, 4)
    proposed = round_robin(range(3), 16, 4)
    matched = match_labels(current, proposed)
    routing = trace.aligned()
    a, b = evaluate_placement(proposed, routing, 1), evaluate_placement(matched, routing, 1)
    assert np.allclose(a.fan_out, b.fan_out) and np.allclose(a.imbalance, b.imbalance)
    assert experts_to_load(current, matched) <= experts_to_load(current, proposed)


def test_the_proposal_keeps_the_current_replica_slots(trace):
    current = eplb(np.tile(np.linspace(1.0, 4.0, 16), (3, 1)), range(3), 4, replica_slots=4)
    assert replica_slots_of(current) == 4 and replica_slots_of(contiguous(range(3), 16, 4)) == 0
    proposal = propose(trace, current, strategies=("eplb", "affinity"))
    assert (proposal.placement.replica_counts().sum(1) == 20).all()


def test_threshold():
    now, better = PlacementScore(2.0, 1.1), PlacementScore(1.8, 1.1)
    assert worth_applying(now, better, 0.05)[0] and not worth_applying(now, better, 0.2)[0]
    assert worth_applying(now, PlacementScore(2.5, 1.0), None)[0]  # null: the operator's call
    # balance counts: the same fan-out with the busiest group a fifth lighter is a gain of 0.2
    assert worth_applying(PlacementScore(2.0, 1.5), PlacementScore(2.0, 1.2), 0.19)[0]
    assert "below min_gain" in worth_applying(now, better, 0.2)[1]


def test_an_explicit_placement_is_scored_on_the_whole_window_and_checked(trace):
    current = contiguous(range(3), 16, 4)
    result = compare(trace, current, round_robin(range(3), 16, 4))
    assert not result.held_out and result.scored_tokens == 16 * 32
    with pytest.raises(ValueError, match="^num_groups"):
        check_compatible(current, contiguous(range(3), 16, 2))
    with pytest.raises(ValueError, match="^layers"):
        check_compatible(current, contiguous(range(2), 16, 4))


def test_too_few_sequences_leave_the_robust_fit_out_and_score_on_the_fit(trace):
    one = trace.select(trace.seq_id == 0)
    proposal = propose(one, contiguous(range(3), 16, 4))
    assert not proposal.held_out and "affinity-robust" not in proposal.candidates


def test_replaying_the_routers_calls_counts_what_its_dispatch_sends(trace):
    holds = np.zeros((1, 2, 4), bool)
    holds[0, 0, [0, 1]] = holds[0, 1, [2, 3]] = True
    plain = Placement("plain", (0,), holds.copy())
    holds[0, 1, 0] = True  # expert 0 also in group 1
    replicated = Placement("replicated", (0,), holds)
    calls = [(0, np.array([[0, 2], [0, 1]])), (0, np.array([[3, 0]]))]
    assert replayed_fan_out(calls, plain) == pytest.approx(5 / 3)  # [0, 2] and [3, 0] span both groups
    assert replayed_fan_out(calls, replicated) == 1.0  # expert 0 goes where the token already goes
    assert replayed_fan_out([], plain) is None
    # without replicas, replaying is evaluate_placement on the same tokens
    current = contiguous(range(3), 16, 4)
    routing = trace.aligned()
    calls = [(layer, routing.expert_ids[l]) for l, layer in enumerate(routing.layers)]
    assert replayed_fan_out(calls, current) == pytest.approx(evaluate_placement(current, routing, 1).mean_fan_out)
