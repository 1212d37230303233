"""The checked-in Serve config files are valid Ray Serve configs whose args are valid Switchyard app configs."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from switchyard.cluster.cli_serve import load_app_args
from switchyard.cluster.groups import contiguous_groups, groups_from_file
from switchyard.configs.model import ConfigError
from switchyard.configs.serve import AppConfig
from switchyard.experts.checkpoint import Checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["local.yaml", "serve.yaml"])
def test_serve_config_files_validate(name):
    raw = yaml.safe_load((CONFIGS / name).read_text())
    schema = ServeDeploySchema.model_validate(raw) if hasattr(ServeDeploySchema, "model_validate") \
        else ServeDeploySchema.parse_obj(raw)
    app = schema.applications[0]
    assert app.import_path == "switchyard.cluster.app:build_app"
    config = AppConfig.model_validate(app.args)
    assert config.num_groups >= 1
    assert load_app_args(str(CONFIGS / name)) == app.args


@pytest.mark.parametrize("change,field", [
    ({"num_groups": 0}, "num_groups"),
    ({"expert_pool": {"num_replicas": -1}}, "expert_pool.num_replicas"),
    ({"router": {"transport": "carrier-pigeon"}}, "router.transport"),
    ({"expert_pool": {"autoscaling": {"min_replicas": 3, "max_replicas": 1}}}, "expert_pool.autoscaling"),
    ({"model": ""}, "model"),
    ({"unknown_field": 1}, "unknown_field"),
])
def test_bad_app_config_names_the_field(change, field):
    with pytest.raises(ValidationError) as err:
        AppConfig.model_validate({"model": "m", **change})
    assert field in str(err.value).replace("\n", ".").replace(" ", "")


def test_placement_file_must_cover_every_expert(checkpoints, tmp_path):
    cfg = Checkpoint.open(checkpoints["qwen3_moe"]).config
    groups = contiguous_groups(cfg, 2)
    assert [sorted(g[0]) for g in groups] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    bad = tmp_path / "p.json"
    bad.write_text('{"groups": [{"name": "a", "experts": {"0": [0, 1]}}, {"name": "b", "experts": {"0": [2]}}]}')
    with pytest.raises(ConfigError, match="layer 0 experts \\[3, 4, 5"):
        groups_from_file(bad, cfg, 2)
