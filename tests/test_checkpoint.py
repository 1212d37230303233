"""Checkpoint loading: only the asked-for experts are read, and bad checkpoints fail naming what is wrong."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from switchyard.experts.checkpoint import Checkpoint, CheckpointError
from switchyard.experts.group import ExpertGroup
from switchyard.experts.messages import ExpertRequest
from switchyard.router.dense_model import DenseModel


@pytest.mark.parametrize("layout", ["per_expert", "fused"])
def test_subset_of_experts_reads_only_those_tensors(layout, checkpoints, fused_checkpoints):
    path = (checkpoints if layout == "per_expert" else fused_checkpoints)["qwen3_moe"]
    ckpt = Checkpoint.open(path)
    group = ExpertGroup.load(ckpt, {0: [1, 5], 2: [7]})
    assert group.held() == {0: (1, 5), 2: (7,)}
    read = " ".join(ckpt.tensors_read)
    if layout == "per_expert":
        assert sorted(ckpt.tensors_read) == sorted(
            f"model.layers.{l}.mlp.experts.{e}.{p}.weight"
            for l, e in ((0, 1), (0, 5), (2, 7)) for p in ("gate_proj", "up_proj", "down_proj"))
    else:
        assert sorted(ckpt.tensors_read) == sorted([
            "model.layers.0.mlp.experts.gate_up_proj[1,5]", "model.layers.0.mlp.experts.down_proj[1,5]",
            "model.layers.2.mlp.experts.gate_up_proj[7]", "model.layers.2.mlp.experts.down_proj[7]"])
    assert "self_attn" not in read and "embed" not in read


def test_group_computes_only_its_own_experts(checkpoints):
    """Splitting the experts over two groups and summing their outputs gives the one-group result."""
    ckpt = Checkpoint.open(checkpoints["mixtral"])
    whole = ExpertGroup.load_all(ckpt)
    left = ExpertGroup.load(Checkpoint.open(checkpoints["mixtral"]), {0: [0, 1, 2, 3]})
    right = ExpertGroup.load(Checkpoint.open(checkpoints["mixtral"]), {0: [4, 5, 6, 7]})
    hidden = torch.randn(10, 64)
    ids = torch.randint(0, 8, (10, 2))
    weights = torch.rand(10, 2)
    full = whole.forward(ExpertRequest(0, hidden, ids, weights)).hidden
    # each group is sent its own experts only (the others -1), as the router's dispatch does
    parts = [g.forward(ExpertRequest(0, hidden, torch.where(torch.isin(ids, torch.tensor(held)), ids, -1),
                                     weights)).hidden for g, held in ((left, [0, 1, 2, 3]), (right, [4, 5, 6, 7]))]
    torch.testing.assert_close(parts[0] + parts[1], full)


def test_a_group_asked_for_an_expert_it_does_not_hold_fails_instead_of_computing_zeros(checkpoints):
    from switchyard.experts.group import ExpertNotHeld

    left = ExpertGroup.load(Checkpoint.open(checkpoints["mixtral"]), {0: [0, 1, 2, 3]})
    ids = torch.tensor([[0, -1], [1, 5]])  # expert 5 lives in another group
    with pytest.raises(ExpertNotHeld, match=r"experts \[5\] are not held"):
        left.forward(ExpertRequest(0, torch.randn(2, 64), ids, torch.rand(2, 2)))
    with pytest.raises(KeyError, match="no experts of layer 1"):
        left.forward(ExpertRequest(1, torch.randn(2, 64), ids.clamp(max=3), torch.rand(2, 2)))


@pytest.mark.parametrize("family", ["qwen2_moe", "deepseek_v3"])
def test_dense_model_reads_no_routed_expert(family, checkpoints):
    ckpt = Checkpoint.open(checkpoints[family])
    DenseModel.load(ckpt)
    assert not [n for n in ckpt.tensors_read if ".experts." in n]
    assert any("shared_expert" in n for n in ckpt.tensors_read)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_tensor_is_named(checkpoints, tmp_path):
    path = _copy(checkpoints["olmoe"], tmp_path / "m")
    state = load_file(str(path / "model.safetensors"))
    del state["model.layers.1.mlp.experts.3.up_proj.weight"]
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.experts\.3\.up_proj\.weight.*missing"):
        ExpertGroup.load_all(Checkpoint.open(path))


def test_wrong_shape_is_named(checkpoints, tmp_path):
    path = _copy(checkpoints["mixtral"], tmp_path / "m")
    state = load_file(str(path / "model.safetensors"))
    state["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(3, 3)
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"q_proj\.weight.*shape \(3, 3\)"):
        DenseModel.load(Checkpoint.open(path))


@pytest.mark.parametrize("family,field,value,message", [
    ("qwen3_moe", "model_type", "llama", "model_type"),
    ("qwen3_moe", "num_experts_per_tok", 99, "num_experts_per_tok"),
    ("qwen3_moe", "hidden_size", None, "hidden_size"),
    ("qwen3_moe", "rope_parameters", {"rope_type": "yarn", "rope_theta": 1e4}, "rope_type"),
    ("deepseek_v3", "n_group", 3, "n_group"),
    ("deepseek_v3", "topk_group", 5, "topk_group"),
    ("deepseek_v3", "kv_lora_rank", None, "kv_lora_rank"),
    ("deepseek_v3", "scoring_func", "softmax", "scoring_func"),
    ("deepseek_v3", "quantization_config", {"quant_method": "fp8"}, "quantization_config"),
    ("deepseek_v3", "rope_parameters", {"rope_type": "llama3", "rope_theta": 1e4}, "rope_type"),
])
def test_bad_config_field_is_named(checkpoints, tmp_path, family, field, value, message):
    path = _copy(checkpoints[family], tmp_path / "m")
    raw = json.loads((path / "config.json").read_text())
    raw[field] = value
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=message):
        Checkpoint.open(path)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        Checkpoint.open(tmp_path)


@pytest.mark.parametrize("tokens", [1, 6, 40])
def test_expert_schedules_agree(tokens):
    from switchyard.experts.compute import expert_forward

    w13, w2 = torch.randn(8, 32, 16), torch.randn(8, 16, 16)
    x, ids, weights = torch.randn(tokens, 16), torch.randint(-1, 8, (tokens, 3)), torch.rand(tokens, 3)
    padded = expert_forward(x, ids, weights, w13, w2, schedule="padded")
    segmented = expert_forward(x, ids, weights, w13, w2, schedule="segmented")
    torch.testing.assert_close(padded, segmented)
    grouped = expert_forward(x, ids, weights, w13, w2, schedule="grouped")
    torch.testing.assert_close(grouped, segmented)
    # reference: one token and one expert at a time
    want = torch.zeros_like(x)
    for t in range(tokens):
        for j in range(3):
            e = int(ids[t, j])
            if e >= 0:
                gate, up = (w13[e] @ x[t]).chunk(2)
                want[t] += weights[t, j] * (w2[e] @ (torch.nn.functional.silu(gate) * up))
    torch.testing.assert_close(padded, want, atol=1e-4, rtol=1e-4)
