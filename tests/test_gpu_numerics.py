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

An MoE model has a second kind of near tie: a gate whose k-th and (k+1)-th experts score within rounding of
each other. There the two sides pick different experts, and with 8 random experts the next token's distribution
changes outright, so neither token is in the other's TOP. Seen on a CPU with AVX-512 BF16 (deepseek_v3, prompt 4,
token 11: experts 2 and 3 of layer 1 scored 0.3391 and 0.3390 in our decode, 0.3391 and 0.3409 in a one-shot
prefill of the same tokens). Such a parting passes only when it is shown to be one: a gate decision of that
sequence, up to the token where it parted, had its margin within GATE_TIE (relative), and our engine, prefilling
the agreed tokens at once, has transformers' token among its TOP. A wrong model fails both.
"""

import contextlib

import pytest
import torch
from transformers import AutoModelForCausalLM

import switchyard.router.gates as gates
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
GATE_TIE = 0.02  # relative margin of a gate decision within bfloat16's rounding (8 bits: 0.4% a step)


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


def relative_margin(chosen: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """[T] how far apart the last chosen and the best passed-over score are, relative to their size."""
    return (chosen - rest) / torch.maximum(chosen.abs(), rest.abs()).clamp_min(1e-6)


@contextlib.contextmanager
def gate_margins():
    """Records, per gate call, the smallest relative margin over its tokens between a chosen and a passed-over
    score (and, for grouped routing, group): where bfloat16 rounding could pick other experts."""
    margins: list[float] = []
    softmax_top_k, grouped = gates.softmax_top_k, gates.grouped_sigmoid_top_k

    def spy_softmax(logits, top_k, normalize):
        ranked = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True).values
        margins.append(relative_margin(ranked[:, top_k - 1], ranked[:, top_k]).min().item())
        return softmax_top_k(logits, top_k, normalize)

    def spy_grouped(logits, score_bias, top_k, num_groups, topk_groups, normalize, scaling):
        routing = grouped(logits, score_bias, top_k, num_groups, topk_groups, normalize, scaling)
        scores = logits.sigmoid() + (0 if score_bias is None else score_bias.float())  # [T, E]
        in_groups = scores.view(len(scores), num_groups, -1)
        group_scores = in_groups.topk(2, dim=-1).values.sum(dim=-1).sort(dim=-1, descending=True).values
        chosen = scores.gather(1, routing.expert_ids)  # [T, k]; against the best passed over in their groups
        chosen_groups = routing.expert_ids // in_groups.shape[-1]
        mask = torch.zeros_like(in_groups[..., 0], dtype=torch.bool).scatter_(1, chosen_groups, True)
        passed = scores.masked_fill(~mask.repeat_interleave(in_groups.shape[-1], 1), float("-inf"))
        passed = passed.scatter(1, routing.expert_ids, float("-inf")).max(dim=-1).values
        margin = relative_margin(chosen.min(dim=-1).values, passed)
        if topk_groups < num_groups:
            margin = torch.minimum(margin, relative_margin(group_scores[:, topk_groups - 1], group_scores[:, topk_groups]))
        margins.append(margin.min().item())
        return routing

    gates.softmax_top_k, gates.grouped_sigmoid_top_k = spy_softmax, spy_grouped
    try:
        yield margins
    finally:
        gates.softmax_top_k, gates.grouped_sigmoid_top_k = softmax_top_k, grouped


def top_ids(logprobs) -> list[int]:
    return [token for token, _ in logprobs.top]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3"])
def test_bfloat16_greedy_agrees_with_transformers_bfloat16(family, checkpoints):
    path = checkpoints[family]
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval().to(DEVICE)
    engine = Engine.from_pretrained(path, EngineConfig(max_num_seqs=8, max_model_len=128, device=DEVICE,
                                                       dtype=DTYPE))
    assert engine.model.dtype == torch.bfloat16, "bfloat16 is the default on CUDA"
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True, logprobs=TOP)
    moe_layers = len(engine.model.config.moe_layers)
    prompts = random_prompts(3, (5, 17, 9, 2, 12))
    expected, their_top = transformers_greedy_top(reference, prompts, NEW_TOKENS)
    agreed, at_gate_ties = [], 0
    for i, (prompt, want) in enumerate(zip(prompts, expected)):
        with gate_margins() as margins:  # one sequence at a time: every gate call is this sequence's
            (out,) = engine.generate([prompt], params)
        ours = list(out.token_ids)
        assert len(ours) == NEW_TOKENS and len(margins) == NEW_TOKENS * moe_layers  # one forward per token
        at = first_difference(ours, want)
        agreed.append(NEW_TOKENS if at is None else at)
        if at is None:
            continue
        if want[at] in top_ids(out.logprobs[at]) and ours[at] in their_top[i][at]:
            continue  # parted at a near tie of the next token
        closest = min(margins[:(at + 1) * moe_layers])  # the gates of the forwards up to token `at`
        (at_once,) = engine.generate([prompt + want[:at]], SamplingParams(max_tokens=1, temperature=0.0,
                                                                          logprobs=TOP))
        assert closest < GATE_TIE and want[at] in top_ids(at_once.logprobs[0]), (
            f"prompt {i}, token {at}: transformers' {want[at]} not in our top {top_ids(out.logprobs[at])}, ours "
            f"{ours[at]} not in theirs {their_top[i][at]}; closest gate margin {closest:.4f}, and prefilled at once "
            f"our top is {top_ids(at_once.logprobs[0])}")
        at_gate_ties += 1
    print(f"{family}: greedy tokens identical to transformers for {agreed} of {NEW_TOKENS} (bfloat16); "
          f"{at_gate_ties} parted at a gate's near tie")


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
