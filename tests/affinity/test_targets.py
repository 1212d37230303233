"""The product's claims on real routing (flame-moe-290m): fit on seq_id < 16, measure on seq_id >= 16.

Two claims are not met; they stay here as strict xfails with the measured numbers, so that a change
that reaches them shows up (and so nobody reads a weakened bound as the claim).
"""

import pytest

from switchyard.router.affinity.affinity_placement import affinity_placement
from switchyard.router.affinity.load_forecast import load_forecast_error
from switchyard.router.affinity.metrics import PlacementReport, evaluate_placement
from switchyard.router.affinity.neighbours import fit_neighbours
from switchyard.router.affinity.prediction import fit_predictor, prediction_recall
from switchyard.router.affinity.strategies import contiguous, eplb

GROUPS, SLOTS, HIDDEN = 8, 8, 4096


@pytest.fixture(scope="module")
def reports(flame) -> dict[str, PlacementReport]:
    layers = list(flame.matrix.layers)
    placements = {
        "contiguous": contiguous(layers, 64, GROUPS),
        "affinity": affinity_placement(flame.matrix, GROUPS),
        "affinity+replicas": affinity_placement(flame.matrix, GROUPS, SLOTS),
        "eplb+replicas": eplb(flame.matrix.popularity, layers, GROUPS, SLOTS),
    }
    return {name: evaluate_placement(p, flame.evaluate, HIDDEN) for name, p in placements.items()}


def test_affinity_without_replicas(reports):
    contiguous_fan_out = reports["contiguous"].mean_fan_out
    affinity = reports["affinity"]
    assert contiguous_fan_out == pytest.approx(4.55, abs=0.05)  # "contiguous is about 4.5"
    assert affinity.mean_imbalance <= 1.15
    # Measured 3.47 (-24%); the best balanced split we found even fitting on the evaluated rows is 3.32.
    assert affinity.mean_fan_out <= 0.78 * contiguous_fan_out
    assert affinity.mean_bytes_per_token == pytest.approx(affinity.mean_fan_out * HIDDEN * 2)


@pytest.mark.xfail(
    strict=True,
    reason="claim not met: 8 groups of 8 experts, no replicas, give fan-out 3.47 held-out; annealing the "
    "split directly on the evaluated rows (scripts/fanout_floor.py) only reaches 3.32 at 1.05 balance",
)
def test_claim_fan_out_at_most_3(reports):
    assert reports["affinity"].mean_fan_out <= 3.0


def test_affinity_with_replicas(reports):
    with_replicas, eplb_replicas = reports["affinity+replicas"], reports["eplb+replicas"]
    assert with_replicas.mean_fan_out < reports["affinity"].mean_fan_out
    assert with_replicas.mean_imbalance <= 1.10
    assert with_replicas.mean_fan_out < eplb_replicas.mean_fan_out
    assert with_replicas.mean_imbalance <= eplb_replicas.mean_imbalance


@pytest.fixture(scope="module")
def recall(flame):
    predictor = fit_predictor(flame.fit, max_distance=3, history=2)
    report = prediction_recall(flame.matrix, predictor, fit_neighbours(flame.fit), flame.evaluate, max_distance=3)
    print(f"recall@6 by distance 1..3: popularity {report.popularity.round(3)}, "
          f"transition {report.transition.round(3)}, fitted {report.fitted.round(3)}, "
          f"neighbours {report.neighbours.round(3)}, ensemble {report.ensemble.round(3)}")
    return report


def test_next_layer_prediction(recall):
    # Measured at distance 1: popularity 0.108, transition 0.451, fitted (ridge, 2 layers of history)
    # 0.528, neighbours 0.555, ensemble 0.571 (hyperparameters cross-validated inside seq_id < 16).
    assert recall.ensemble[0] > recall.neighbours[0] > recall.fitted[0] > recall.transition[0] > 3 * recall.popularity[0]
    assert recall.fitted[0] >= 0.5
    assert recall.ensemble[0] >= 0.56
    assert (recall.fitted[1:] > recall.transition[1:]).all()  # the chain forgets faster than the fit
    assert (recall.ensemble > recall.fitted).all()  # at distances 2 and 3 too: 0.551 vs 0.504, 0.533 vs 0.479


@pytest.mark.xfail(
    strict=True,
    reason="goal not met: next-layer recall@6 is 0.571 (neighbours + ridge ensemble; ridge alone 0.528) from "
    "routing alone on 1024 fit tokens",
)
def test_goal_next_layer_recall_0_6(recall):
    assert recall.ensemble[0] >= 0.6


def test_routing_forecasts_group_load(flame):
    """The prediction's use: per-group load of the next layers for a batch of 32 tokens, 8 affinity groups."""
    fit = flame.fit
    report = load_forecast_error(flame.matrix, fit_predictor(fit, max_distance=3, history=2), fit_neighbours(fit),
                                 flame.evaluate, affinity_placement(flame.matrix, GROUPS), batch_tokens=32)
    # Measured: popularity 0.257 / 0.261 / 0.266, transition 0.203 / 0.240 / 0.257, ensemble 0.152 / 0.161 / 0.173
    assert (report.ensemble < report.transition).all() and (report.transition < report.popularity).all()
    assert (report.ensemble < 0.7 * report.popularity).all()
