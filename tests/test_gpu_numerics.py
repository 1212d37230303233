"""On a GPU: the engine's default there (bfloat16) against transformers in bfloat16 on the same GPU.

Without CUDA the same tests run on the CPU, in bfloat16 asked for explicitly: everything up to the device (the
inputs built by the helpers the CPU tests use, the engine's and transformers' calls) runs on every CPU run of
the suite, so a changed signature fails there first, not the first time a GPU runs it. The float32 checks on the GPU (logits to 1e-4, greedy tokens identical) are
test_numerics.py run with SWITCHYARD_TEST_DEVICE=cuda; scripts/gpu_check.sh runs both.

In bfloat16 two correct implementations round differently, so greedy sequences may part after a while; exact
equality would fail for no fault. The check is vLLM's (`check_logprobs_close` in its tests): the two sequences
agree token for token until they first differ, and there each side's token is among the other's TOP most
likely, i.e. they parted at a near tie, not at a wrong token. How far they agree is printed (`-s`), never
asserted. TOP is 10, not vLLM's usual 5: the tiny random models' next-token distributions are nearly flat over
320 tokens, with exact ties in bfloat16 (trying this on the CPU in bfloat16, a deepseek_v3 sequence parted where
transformers' token was our 8th; a wrong model parts at once, at a random rank of 320).
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from switchyard.cluster.bench.engine import left_padded
from switchyard.configs.engine import EngineConfig
from switchyard.router.batch import StepBatch
from switchyard.router.engine import Engine
from switchyard.router.expert_backend import forward_step
from switchyard.router.sampling import SamplingParams
from test_numerics import random_prompts

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
# On the GPU, the engine's default dtype there (it must be bfloat16); on the CPU fallback, bfloat16 asked for.
DTYPE = "auto" if ON_GPU else "bfloat16"

NEW_TOKENS = 32
TOP = 10


def transformers_greedy_top(model, prompts: list[list[int]], new_tokens: int):
    """Greedy `generate` on a left-padded batch: per prompt its tokens and, per step, the TOP most likely ids."""
    ids, mask = left_padded(prompts, model.device)
    model.generation_config.eos_token_id = None  # exactly new_tokens, as ignore_eos on our side
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    tokens = out.sequences[:, ids.shape[1]:].tolist()
    top = torch.stack(out.logits, 1).float().topk(TOP, dim=-1).indices.tolist()  # [B, N, TOP]
    return tokens, top


def first_difference(ours: list[int], theirs: list[int]) -> int | None:
    return next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3"])
def test_bfloat16_greedy_agrees_with_transformers_bfloat16(family, checkpoints):
    path = checkpoints[family]
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval().to(DEVICE)
    engine = Engine.from_pretrained(path, EngineConfig(max_num_seqs=8, max_model_len=128, device=DEVICE,
                                                       dtype=DTYPE))
    assert engine.model.dtype == torch.bfloat16, "bfloat16 is the default on CUDA"
    prompts = random_prompts(3, (5, 17, 9, 2, 12))
    outputs = engine.generate(prompts, SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True,
                                                      logprobs=TOP))
    expected, their_top = transformers_greedy_top(reference, prompts, NEW_TOKENS)
    agreed = []
    for i, (out, want) in enumerate(zip(outputs, expected)):
        ours = list(out.token_ids)
        assert len(ours) == NEW_TOKENS
        at = first_difference(ours, want)
        agreed.append(NEW_TOKENS if at is None else at)
        if at is None:
            continue
        our_top = [token for token, _ in out.logprobs[at].top]
        assert want[at] in our_top, f"prompt {i}, token {at}: transformers' {want[at]} not in our top {our_top}"
        assert ours[at] in their_top[i][at], (f"prompt {i}, token {at}: our {ours[at]} not in transformers' top "
                                             f"{their_top[i][at]}")
    print(f"{family}: greedy tokens identical to transformers for {agreed} of {NEW_TOKENS} (bfloat16)")


def test_engine_on_the_device_returns_logits_there(checkpoints):
    """No tensor silently stays on the CPU: the step's logits come back on the GPU, in bfloat16's model. The
    batch is built as the CPU numerics tests build theirs (`StepBatch.scratch_prefill`)."""
    engine = Engine.from_pretrained(checkpoints["qwen3_moe"], EngineConfig(max_num_seqs=4, max_model_len=64,
                                                                          device=DEVICE, dtype=DTYPE))
    prompts = random_prompts(1)
    batch = StepBatch.scratch_prefill(prompts, engine.cache)
    with torch.inference_mode():
        logits = forward_step(engine.model, engine.experts, engine.cache, batch)
    assert logits.device.type == DEVICE and engine.model.dtype == torch.bfloat16
    assert logits.shape == (len(prompts), engine.model.config.vocab_size)
    assert torch.isfinite(logits.float()).all()
