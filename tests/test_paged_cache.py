"""The paged KV cache: blocks sized by a memory budget, sequences admitted by free blocks, preemption by
recompute when they run out; outputs identical to an unconstrained cache."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from switchyard.configs.engine import EngineConfig, parse_bytes
from switchyard.configs.model import ConfigError
from switchyard.experts.checkpoint import Checkpoint
from switchyard.router.engine import Engine
from switchyard.router.kv_cache import bytes_per_token, num_blocks_for
from switchyard.router.sampling import SamplingParams
from test_numerics import random_prompts, transformers_greedy
from tiny_models import FAMILIES

GREEDY = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)


def budget_for(path, tokens: int, block_size: int) -> int:
    """The bytes of `tokens` tokens of cache, in whole blocks."""
    per_token = bytes_per_token(Checkpoint.open(path).config, torch.float32)
    return -(-tokens // block_size) * block_size * per_token


@pytest.mark.parametrize("family", FAMILIES)
def test_small_blocks_give_transformers_greedy_tokens(family, checkpoints):
    """Blocks of 3 tokens: every sequence's cache spread over many blocks, a block boundary inside every chunk."""
    path = checkpoints[family]
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    engine = Engine.from_pretrained(path, EngineConfig(max_num_seqs=8, max_model_len=128, block_size=3,
                                                       max_num_batched_tokens=16))
    prompts = random_prompts(3, (5, 17, 9, 2, 12))
    expected = transformers_greedy(reference, prompts, GREEDY.max_tokens)
    assert [list(o.token_ids) for o in engine.generate(prompts, GREEDY)] == expected


def test_a_budget_below_full_length_still_admits_more_sequences(checkpoints):
    """Short requests in a cache that holds two sequences of max_model_len run eight at a time."""
    path = checkpoints["qwen3_moe"]
    engine = Engine.from_pretrained(path, EngineConfig(max_num_seqs=8, max_model_len=128, block_size=8,
                                                       kv_cache_memory=budget_for(path, 2 * 128, 8)))
    prompts = random_prompts(5, (4, 6, 5, 3, 7, 4, 6, 5))
    seqs = [engine.add_request(p, SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)) for p in prompts]
    most_running = 0
    while engine.has_unfinished():
        engine.step()
        most_running = max(most_running, len(engine.scheduler.running))
    assert most_running == 8 > 2
    assert engine.scheduler.num_preemptions == 0
    assert all(s.finish_reason == "length" for s in seqs)


@pytest.mark.parametrize("family", ["qwen3_moe", "deepseek_v3"])  # grouped-query and latent caches
def test_preemption_under_a_tiny_budget_keeps_greedy_outputs(family, checkpoints):
    path = checkpoints[family]
    prompts = random_prompts(6, (9, 21, 5, 14, 30, 11))
    roomy = Engine.from_pretrained(path, EngineConfig(max_num_seqs=6, max_model_len=64))
    want = [o.token_ids for o in roomy.generate(prompts, GREEDY)]
    # room for one sequence of max_model_len: six that grow to 45-70 tokens must take turns
    tiny = Engine.from_pretrained(path, EngineConfig(max_num_seqs=6, max_model_len=64, block_size=4,
                                                     max_num_batched_tokens=32,
                                                     kv_cache_memory=budget_for(path, 64, 4)))
    outputs = tiny.generate(prompts, SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True))
    assert [o.token_ids for o in outputs] == want
    assert tiny.scheduler.num_preemptions > 0
    assert tiny.cache.num_free_blocks == tiny.cache.num_blocks == 16


def test_preemption_keeps_seeded_samples_and_prompt_logprobs(checkpoints):
    """A recomputed sequence draws no extra random numbers and scores no prompt token twice."""
    path = checkpoints["mixtral"]
    prompts = random_prompts(7, (9, 21, 5, 14))
    params = [SamplingParams(max_tokens=30, temperature=0.9, seed=s, ignore_eos=True, prompt_logprobs=2,
                             logprobs=1) for s in range(len(prompts))]
    roomy = Engine.from_pretrained(path, EngineConfig(max_num_seqs=4, max_model_len=64))
    tiny = Engine.from_pretrained(path, EngineConfig(max_num_seqs=4, max_model_len=64, block_size=4,
                                                     kv_cache_memory=budget_for(path, 64, 4)))
    want, got = roomy.generate(prompts, params), tiny.generate(prompts, params)
    assert tiny.scheduler.num_preemptions > 0
    for a, b in zip(want, got):
        assert a.token_ids == b.token_ids
        assert len(b.prompt_logprobs) == len(a.prompt_logprobs)
        for x, y in zip(a.prompt_logprobs[1:], b.prompt_logprobs[1:]):
            assert x.token_id == y.token_id and abs(x.logprob - y.logprob) < 1e-4
        assert [lp.token_id for lp in a.logprobs] == [lp.token_id for lp in b.logprobs]


def test_the_cache_takes_the_budget_in_whole_blocks(checkpoints):
    for family in ("qwen2_moe", "deepseek_v3"):
        path = checkpoints[family]
        block_bytes = budget_for(path, 16, 16)
        budget = 37 * block_bytes + block_bytes // 2
        engine = Engine.from_pretrained(path, EngineConfig(max_num_seqs=4, max_model_len=64, kv_cache_memory=budget))
        assert engine.cache.num_blocks == 37
        assert budget - block_bytes < engine.cache.nbytes() <= budget
    # no budget: room for max_num_seqs sequences of max_model_len, as the slot cache had
    engine = Engine.from_pretrained(checkpoints["olmoe"], EngineConfig(max_num_seqs=3, max_model_len=50))
    assert engine.cache.num_blocks == 3 * 4


def test_a_budget_too_small_for_one_sequence_is_refused(checkpoints):
    path = checkpoints["qwen3_moe"]
    config = EngineConfig(max_num_seqs=4, max_model_len=64, block_size=16, kv_cache_memory=budget_for(path, 48, 16))
    with pytest.raises(ConfigError, match=r"kv_cache_memory.*holds 3 blocks.*max_model_len 64 needs 4"):
        num_blocks_for(Checkpoint.open(path).config, config, torch.float32)


def test_engine_fields_for_memory_are_checked():
    with pytest.raises(ConfigError, match="gpu_memory_utilization.*needs device 'cuda'"):
        EngineConfig(gpu_memory_utilization=0.5)
    with pytest.raises(ConfigError, match="kv_cache_memory"):
        EngineConfig(kv_cache_memory=0)
    with pytest.raises(ConfigError, match="block_size"):
        EngineConfig(block_size=0)
    with pytest.raises(ConfigError, match="device"):
        EngineConfig(device="tpu")
    assert parse_bytes("4GiB") == 4 << 30 and parse_bytes("1.5 MB") == 1_500_000 and parse_bytes(123) == 123
    with pytest.raises(ConfigError, match="memory size"):
        parse_bytes("4 parsecs")
    assert EngineConfig().torch_dtype == torch.float32
    assert EngineConfig(device="cuda").torch_dtype == torch.bfloat16


def test_served_requests_past_the_cache_all_complete_with_their_own_tokens(checkpoints):
    """Over HTTP, 8 concurrent streams in a cache for one full sequence: all finish, each with the tokens it
    gets alone, and the preemptions that made room show in the engine."""
    import asyncio

    import httpx

    from served_app import http_server, served_app

    path = checkpoints["qwen2_moe"]
    prompts = random_prompts(8, (7, 12, 4, 9, 15, 6, 10, 8))
    alone = Engine.from_pretrained(path, EngineConfig(max_num_seqs=8, max_model_len=64))
    want = [list(o.token_ids) for o in alone.generate(prompts, GREEDY)]
    with served_app(path, "m", max_num_seqs=8, max_model_len=64, block_size=4,
                    kv_cache_memory=budget_for(path, 64, 4)) as app, http_server(app) as url:
        async def one(client, prompt):
            r = await client.post(f"{url}/v1/completions", json={
                "model": "m", "prompt": prompt, "max_tokens": GREEDY.max_tokens, "temperature": 0,
                "ignore_eos": True, "logprobs": 0})
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["logprobs"]["tokens"]

        async def all_of_them():
            async with httpx.AsyncClient(timeout=120) as client:
                return await asyncio.gather(*[one(client, p) for p in prompts])

        got = asyncio.run(all_of_them())
        engine = app.state.served.engine.engine
        assert engine.scheduler.num_preemptions > 0
        assert engine.cache.num_free_blocks == engine.cache.num_blocks
    # each token as the API writes it in logprobs (a part of a UTF-8 character as `bytes:\\xNN`)
    from switchyard.cluster.api.logprobs import TokenText

    written = TokenText(alone.tokenizer)
    assert got == [[written.text(t) for t in ids] for ids in want]
