"""Logits and greedy tokens against transformers' own model classes, for every family and expert layout.

On the CPU by default; `SWITCHYARD_TEST_DEVICE=cuda` runs the same checks with both models on that GPU, in
float32 and to the same tolerances (scripts/gpu_check.sh, docs/gpu.md).
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from switchyard.cluster.bench.engine import transformers_generate
from switchyard.configs.engine import EngineConfig
from switchyard.router.batch import StepBatch
from switchyard.router.engine import Engine
from switchyard.router.expert_backend import forward_step
from switchyard.router.kv_cache import MLACache
from switchyard.router.sampling import SamplingParams
from tiny_models import FAMILIES, VOCAB

PROMPT_LENGTHS = (7, 19, 3, 12)


def random_prompts(seed: int, lengths=PROMPT_LENGTHS) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in lengths]


def reference_logits(model, prompts):
    """transformers on a right-padded batch: the valid positions are untouched by the padding."""
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, :len(p)] = torch.tensor(p)
        mask[i, :len(p)] = 1
    with torch.no_grad():
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
    return torch.cat([logits[i, :len(p)] for i, p in enumerate(prompts)])


def engine_config(device: str, **fields) -> EngineConfig:
    """On the CPU, exactly the config these tests always used; on another device the same there, in float32
    (the GPU's default dtype is bfloat16)."""
    if device == "cpu":
        return EngineConfig(**fields)
    return EngineConfig(device=device, dtype="float32", **fields)


def load_reference(path, device: str):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval().to(device)


def transformers_greedy(reference, prompts, new_tokens: int) -> list[list[int]]:
    """`generate` on a left-padded batch, pure argmax for every step (no EOS), as `ignore_eos` on our side."""
    reference.generation_config.eos_token_id = None
    return transformers_generate(reference, prompts, new_tokens)


@pytest.mark.parametrize("layout", ["per_expert", "fused"])
@pytest.mark.parametrize("family", FAMILIES)
def test_prefill_logits_match_transformers(family, layout, checkpoints, fused_checkpoints, numerics_device):
    path = (checkpoints if layout == "per_expert" else fused_checkpoints)[family]
    reference = load_reference(path, numerics_device)
    engine = Engine.from_pretrained(path, engine_config(numerics_device, max_num_seqs=4, max_model_len=64))
    prompts = random_prompts(1)
    batch = StepBatch.scratch_prefill(prompts, engine.cache)
    with torch.inference_mode():
        ours = forward_step(engine.model, engine.experts, engine.cache, batch, all_logits=True).cpu()
    expected = reference_logits(reference, prompts).cpu()
    assert expected.abs().max() > 0.1, "logits too small to make the comparison meaningful"
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["qwen2_moe", "deepseek_v3", "deepseek_v3_yarn"])
def test_decode_logits_match_full_forward(family, checkpoints, numerics_device):
    """Logits computed token by token through the KV cache equal those of one full forward (for deepseek_v3:
    decode attends over the compressed latents, the full forward over keys and values expanded from them)."""
    path = checkpoints[family]
    reference = load_reference(path, numerics_device)
    # blocks of 4 tokens, each sequence's scattered over the pool and interleaved with the other's
    engine = Engine.from_pretrained(path, engine_config(numerics_device, max_num_seqs=4, max_model_len=64,
                                                        block_size=4))
    assert isinstance(engine.cache, MLACache) == family.startswith("deepseek_v3")
    prompts = random_prompts(2, (6, 11))
    tables = [[5, 1], [0, 6, 2]]
    split = [3, 4]  # prefill a prefix of each, then feed the rest one token per step
    batch = StepBatch.build([p[:s] for p, s in zip(prompts, split)], [0, 0], tables, 4)
    step_logits = [[], []]
    with torch.inference_mode():
        out = forward_step(engine.model, engine.experts, engine.cache, batch, all_logits=True)
        step_logits[0].append(out[:split[0]])
        step_logits[1].append(out[split[0]:])
        for t in range(max(len(p) - s for p, s in zip(prompts, split))):
            live = [i for i, p in enumerate(prompts) if split[i] + t < len(p)]
            batch = StepBatch.build([[prompts[i][split[i] + t]] for i in live], [split[i] + t for i in live],
                                    [tables[i] for i in live], 4)
            out = forward_step(engine.model, engine.experts, engine.cache, batch)
            for row, i in enumerate(live):
                step_logits[i].append(out[row:row + 1])
    ours = torch.cat([torch.cat(s) for s in step_logits]).cpu()
    torch.testing.assert_close(ours, reference_logits(reference, prompts).cpu(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["qwen3_moe", "deepseek_v3"])
def test_mixed_step_logits_match_full_forward(family, checkpoints, numerics_device):
    """A step where some sequences decode one token while others prefill a chunk attends over each kind apart
    (StepBatch.attention_parts); its logits equal one full forward, for grouped-query and latent attention."""
    path = checkpoints[family]
    reference = load_reference(path, numerics_device)
    engine = Engine.from_pretrained(path, engine_config(numerics_device, max_num_seqs=4, max_model_len=64,
                                                        block_size=4))
    prompts = random_prompts(3, (9, 14, 10))
    tables = [[5, 1, 8], [0, 6, 2, 9], [3, 4, 7]]
    fed = [3, 0, 0]  # sequence 0 prefills alone first; then it decodes beside the others' chunks of 3
    chunk = [1, 3, 3]
    logits = [[], [], []]
    mixed_steps = 0
    with torch.inference_mode():
        first = StepBatch.build([prompts[0][:3]], [0], [tables[0]], 4)
        logits[0].append(forward_step(engine.model, engine.experts, engine.cache, first, all_logits=True))
        while any(f < len(p) for f, p in zip(fed, prompts)):
            live = [i for i, p in enumerate(prompts) if fed[i] < len(p)]
            pieces = [prompts[i][fed[i]:fed[i] + chunk[i]] for i in live]
            batch = StepBatch.build(pieces, [fed[i] for i in live], [tables[i] for i in live], 4)
            mixed_steps += len(batch.attention_parts) == 2
            out = forward_step(engine.model, engine.experts, engine.cache, batch, all_logits=True)
            start = 0
            for i, piece in zip(live, pieces):
                logits[i].append(out[start:start + len(piece)])
                start += len(piece)
                fed[i] += len(piece)
    assert mixed_steps >= 3
    ours = torch.cat([torch.cat(s) for s in logits]).cpu()
    torch.testing.assert_close(ours, reference_logits(reference, prompts).cpu(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_matches_transformers_generate(family, checkpoints, numerics_device):
    path = checkpoints[family]
    reference = load_reference(path, numerics_device)
    engine = Engine.from_pretrained(path, engine_config(numerics_device, max_num_seqs=8, max_model_len=128))
    prompts = random_prompts(3, (5, 17, 9, 2, 12))
    new_tokens = 40
    expected = transformers_greedy(reference, prompts, new_tokens)
    outputs = engine.generate(prompts, SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True))
    for out, want in zip(outputs, expected):
        assert list(out.token_ids) == want
        assert out.finish_reason == "length"


def test_micro_batched_step_equals_one_batch(checkpoints, numerics_device):
    """Ping-pong micro-batches change the order of work, not the result."""
    path = checkpoints["qwen2_moe"]
    prompts = random_prompts(4, (5, 9, 3, 7, 11))
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    results = []
    for parts in (1, 2, 3):
        engine = Engine.from_pretrained(path, engine_config(numerics_device, max_num_seqs=8, max_model_len=64))
        engine.micro_batches = parts
        results.append([o.token_ids for o in engine.generate(prompts, params)])
    assert results[0] == results[1] == results[2]
