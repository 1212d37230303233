"""Token-adaptive routing: the rules on hand-made weights, and end to end through the engine and the CLI."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from switchyard.cluster.cli import main
from switchyard.configs.engine import AdaptiveRouting, EngineConfig
from switchyard.configs.model import ConfigError
from switchyard.router.adaptive_routing import adapt_routing
from switchyard.router.engine import Engine
from switchyard.router.gates import Routing
from switchyard.router.sampling import SamplingParams

# Three tokens, top-4, weights in the gate's order (not sorted), summing to 2 (like a routed_scaling_factor).
# Shares of the token's weight: [.1, .6, .2, .1], [.3, .25, .28, .17], [.01, .03, .95, .01].
IDS = torch.tensor([[5, 1, 7, 2], [0, 3, 4, 6], [2, 4, 6, 1]])
WEIGHTS = torch.tensor([[0.2, 1.2, 0.4, 0.2], [0.6, 0.5, 0.56, 0.34], [0.02, 0.06, 1.9, 0.02]])


@pytest.mark.parametrize("policy,kept_ids", [
    (AdaptiveRouting("threshold", 0.15), [[-1, 1, 7, -1], [0, 3, 4, 6], [-1, -1, 6, -1]]),
    (AdaptiveRouting("threshold", 0.27), [[-1, 1, -1, -1], [0, -1, 4, -1], [-1, -1, 6, -1]]),
    (AdaptiveRouting("threshold", 0.27, min_experts=2), [[-1, 1, 7, -1], [0, -1, 4, -1], [-1, 4, 6, -1]]),
    # the expert that takes the running share past p is kept: .6 < .75 keeps the second, .8 stops
    (AdaptiveRouting("cumulative", 0.75), [[-1, 1, 7, -1], [0, 3, 4, -1], [-1, -1, 6, -1]]),
    (AdaptiveRouting("cumulative", 1.0), [[5, 1, 7, 2], [0, 3, 4, 6], [2, 4, 6, 1]]),
])
def test_rules_keep_the_best_experts(policy, kept_ids):
    out = adapt_routing(Routing(IDS, WEIGHTS), policy)
    assert torch.equal(out.expert_ids, torch.tensor(kept_ids))
    kept = out.expert_ids >= 0
    assert torch.equal(out.weights[kept], WEIGHTS[kept]) and torch.all(out.weights[~kept] == 0)


def test_renormalising_gives_the_kept_experts_the_whole_weight():
    out = adapt_routing(Routing(IDS, WEIGHTS), AdaptiveRouting("threshold", 0.15, renormalize=True))
    torch.testing.assert_close(out.weights.sum(-1), WEIGHTS.sum(-1))
    kept = out.expert_ids >= 0
    scale = (WEIGHTS.sum(-1) / torch.where(kept, WEIGHTS, 0).sum(-1))[:, None].expand_as(WEIGHTS)
    torch.testing.assert_close(out.weights[kept], WEIGHTS[kept] * scale[kept])


@pytest.mark.parametrize("kwargs,field", [({"mode": "top"}, "mode"), ({"value": 0.0}, "value"),
                                          ({"value": 1.5}, "value"), ({"min_experts": 0}, "min_experts")])
def test_bad_policy_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        AdaptiveRouting(**{"mode": "threshold", "value": 0.2, **kwargs})


def test_keeping_only_the_best_expert_equals_a_top_1_model(checkpoints):
    """Mixtral renormalises its top-k: dropping all but the best expert and renormalising is top-1 routing."""
    path = checkpoints["mixtral"]
    params = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
    prompts = [[5, 6, 7, 8], [40, 41, 42, 43, 44, 45, 46]]
    adaptive = Engine.from_pretrained(path, EngineConfig(max_num_seqs=2, max_model_len=32,
                                                         adaptive_routing=AdaptiveRouting("threshold", 1.0, renormalize=True)))
    top1 = Engine.from_pretrained(path, EngineConfig(max_num_seqs=2, max_model_len=32))
    top1.model.config = dataclasses.replace(top1.model.config, top_k=1)
    full = Engine.from_pretrained(path, EngineConfig(max_num_seqs=2, max_model_len=32))
    got, want, untouched = ([o.token_ids for o in e.generate(prompts, params)] for e in (adaptive, top1, full))
    assert got == want
    assert got != untouched  # the test would pass vacuously if top-1 and top-2 agreed


def test_engine_refuses_more_min_experts_than_top_k(checkpoints):
    with pytest.raises(ConfigError, match="min_experts"):
        Engine.from_pretrained(checkpoints["deepseek_v3"], EngineConfig(
            max_num_seqs=1, max_model_len=32, adaptive_routing=AdaptiveRouting("cumulative", 0.9, min_experts=3)))


def test_generate_cli_takes_the_adaptive_routing_flags(checkpoints, capsys):
    argv = ["generate", "--model", str(checkpoints["deepseek_v3"]), "--max-tokens", "4", "--json",
            "--max-model-len", "64", "--adaptive-routing", "cumulative", "--adaptive-routing-value", "0.8", "A yard"]
    assert main(argv) == 0
    assert len(json.loads(capsys.readouterr().out)["token_ids"]) == 4
    assert main(argv[:-3] + ["--adaptive-routing-value", "2", "A yard"]) == 2
    assert "adaptive_routing.value" in capsys.readouterr().err


def test_eval_script_prints_the_table(checkpoints, tmp_path):
    from tiny_models import TEXT

    text = tmp_path / "held-out.txt"
    text.write_text(TEXT)
    script = Path(__file__).resolve().parents[1] / "scripts" / "adaptive_routing_eval.py"
    run = subprocess.run([sys.executable, str(script), "--model", str(checkpoints["qwen3_moe"]), "--text", str(text),
                          "--tokens", "96", "--window", "48", "--thresholds", "0.3", "--cumulative", "0.8",
                          "--no-renormalize-rows", "--target-saving", "0"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ") and "setting" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["top-k (off)", "share >= 0.3", "cumulative p 0.8"]
    saved = float(rows[1].split("|")[3].strip().rstrip("%"))
    assert saved > 0  # qwen3_moe is top-3: a 0.3 share threshold always drops some experts
