"""`switchyard plan` as a user runs it: --json, the PNG, --validate on the published rows, bad input."""

import json

import pytest

from switchyard.cluster.cli import main
from switchyard.cluster.planning.validation import PUBLISHED, published_rows


def test_validate_published_rows(capsys):
    assert main(["plan", "--validate", "--quick", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["row"] for r in rows] == [p.system for p in PUBLISHED]
    for r in rows:
        assert r["ok"] and abs(r["error"]) <= r["tolerance"]
        assert r["source"].startswith("https://")


def test_validate_fails_loudly_when_a_row_misses(monkeypatch, capsys):
    from switchyard.cluster.planning import validation

    monkeypatch.setattr(validation, "predict", lambda row: 2.0 * row.published_tokens_per_gpu_s)
    assert not any(r["ok"] for r in published_rows())
    assert main(["plan", "--validate", "--quick"]) == 1
    assert "NO" in capsys.readouterr().out


@pytest.mark.slow
def test_plan_json_and_pareto_png(tmp_path, capsys):
    png = tmp_path / "pareto.png"
    code = main(["plan", "--model", "deepseek-v3", "--hardware", "H100", "--tokens-per-s", "20000",
                 "--transport", "rdma", "--top", "2", "--plot", str(png), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = report["target"]
    for layout in ("switchyard, coalesced group calls", "expert parallel"):
        plans = report["plans"][layout]
        assert plans, layout
        for p in plans:
            assert p["tokens_per_s"] >= target["tokens_per_s"] and p["itl_s"] <= target["itl_p95_s"]
            assert p["dollars_per_hour"] == pytest.approx(p["devices"] * 3.0)
    floors = {t["transport"]: t for t in report["transports"]}
    assert floors["rdma"]["fits_itl"] and not floors["ray-compiled"]["fits_itl"]


def test_bad_model_and_hardware_fail_naming_them(capsys):
    with pytest.raises(SystemExit, match="no reference model"):
        main(["plan", "--model", "no-such-model"])
    with pytest.raises(SystemExit, match="--hardware"):
        main(["plan", "--hardware", "TPU9"])
