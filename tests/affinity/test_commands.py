import argparse
import json

import pytest

from switchyard.cluster.cli import affinity, place
from switchyard.cluster.cli.main import main
from switchyard.router.affinity.matrix import AffinityMatrix
from switchyard.router.affinity.placement import Placement
from switchyard.router.affinity.synthetic import synthetic_trace
from switchyard.router.affinity.traces import write_traces


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    path = tmp_path_factory.mktemp("traces") / "synthetic.parquet"
    write_traces(path, synthetic_trace(num_layers=3, num_experts=16, top_k=2, num_sequences=8, seq_len=16))
    return path


def test_place_end_to_end(traces, tmp_path, capsys):
    out = tmp_path / "placement.json"
    code = main(["place", "--traces", str(traces), "--groups", "4", "--replicas", "4", "--fit", "seq_id<4",
                 "--eval", "seq_id>=4", "--hidden-size", "64", "-o", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    for strategy in ("contiguous", "round_robin", "eplb", "affinity"):
        assert f"\n{strategy} " in table
    placement = Placement.load(out)
    assert placement.strategy == "affinity" and placement.num_groups == 4 and placement.layers == (0, 1, 2)


def test_place_json_on_real_traces(flame_path, capsys):
    assert main(["place", "--traces", str(flame_path), "--groups", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["fit_rows"] == result["eval_rows"] == 8192  # default split: first half of the sequences
    rows = {row["strategy"]: row for row in result["results"]}
    assert rows["affinity"]["fan_out"] < rows["contiguous"]["fan_out"]
    assert rows["affinity"]["bytes_per_token"] == pytest.approx(rows["affinity"]["fan_out"] * 4096 * 2)


def test_fit_plot_and_predict(traces, tmp_path, capsys):
    matrix_path, png = tmp_path / "m.npz", tmp_path / "c.png"
    placement_path = tmp_path / "p.json"
    assert main(["affinity", "fit", str(traces), "-o", str(matrix_path), "--rows", "seq_id<4"]) == 0
    assert AffinityMatrix.load(matrix_path).num_experts == 16
    main(["place", "--traces", str(traces), "--groups", "4", "-o", str(placement_path)])
    assert main(["affinity", "plot", "--matrix", str(matrix_path), "--layer", "1",
                 "--placement", str(placement_path), "-o", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["affinity", "predict", "--traces", str(traces), "--distance", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [len(report[name]) for name in ("popularity", "transition", "fitted", "neighbours", "ensemble")] == [2] * 5
    assert len(report["load_forecast"]["ensemble"]) == 2
    assert main(["affinity", "predict", "--traces", str(traces), "--distance", "2", "--neighbours", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, first = lines[1:3]
    assert header.split() == ["distance", "popularity", "transition", "fitted", "neighbours", "ensemble"]
    assert first.split()[0] == "1" and len(first.split()) == 6
    assert "8 groups (affinity)" in lines[5] and lines[6].split() == ["distance", "popularity", "transition", "ensemble"]
    assert main(["affinity", "predict", "--traces", str(traces), "--distance", "1", "--groups", "4",
                 "--batch-tokens", "16", "--json"]) == 0
    forecast = json.loads(capsys.readouterr().out)["load_forecast"]
    assert forecast["batch_tokens"] == 16 and forecast["placement"] == "affinity" and len(forecast["ensemble"]) == 1


def test_bad_input_is_a_clean_error(traces, capsys):
    assert main(["place", "--traces", str(traces), "--groups", "4", "--fit", "seq_id<<4"]) == 2
    assert "expected an integer" in capsys.readouterr().err
    assert main(["place", "--traces", str(traces), "--groups", "3"]) == 2
    assert "must divide" in capsys.readouterr().err


def test_register_mounts_on_another_cli():
    parser = argparse.ArgumentParser(prog="switchyard")
    subparsers = parser.add_subparsers(dest="command")
    affinity.register(subparsers)
    place.register(subparsers)
    args = parser.parse_args(["place", "--traces", "t.parquet", "--groups", "8", "--replicas", "8"])
    assert (args.groups, args.replicas, args.fit, callable(args.func)) == (8, 8, None, True)
