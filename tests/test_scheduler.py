"""Chunked prefill and mixed steps: decodes never wait behind a prompt, and outputs do not change."""

import random

from switchyard.configs.engine import EngineConfig
from switchyard.router.detokenizer import IncrementalDetokenizer
from switchyard.router.engine import Engine
from switchyard.router.sampling import SamplingParams
from switchyard.router.tokenizer import Tokenizer
from switchyard.configs.defaults import resolve_model

GREEDY = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
PROMPTS = [list(range(3, 3 + n)) for n in (5, 23, 2, 40, 11, 17)]


def test_chunked_prefill_gives_the_tokens_of_whole_prompt_prefill(checkpoints):
    whole = Engine.from_pretrained(checkpoints["qwen3_moe"], EngineConfig(max_num_seqs=6, max_model_len=96))
    want = [o.token_ids for o in whole.generate(PROMPTS, GREEDY)]
    # 8 tokens a step: every prompt but the shortest is cut into chunks that share steps with decodes
    chunked = Engine.from_pretrained(checkpoints["qwen3_moe"],
                                     EngineConfig(max_num_seqs=6, max_model_len=96, max_num_batched_tokens=8))
    got = [o.token_ids for o in chunked.generate(PROMPTS, GREEDY)]
    assert got == want
    kinds = {s.kind for s in chunked.step_log}
    assert kinds == {"prefill", "mixed", "decode"}
    assert max(s.num_tokens for s in chunked.step_log) <= 8


def test_a_running_sequence_decodes_on_every_step_while_a_long_prompt_prefills(checkpoints):
    engine = Engine.from_pretrained(checkpoints["qwen3_moe"],
                                    EngineConfig(max_num_seqs=4, max_model_len=128, max_num_batched_tokens=6))
    running = engine.add_request([5, 6, 7], SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True))
    engine.step()  # its prefill
    engine.add_request(list(range(10, 70)), GREEDY)  # 60 prompt tokens: ten steps of 5 beside the decode
    for _ in range(12):
        produced = [o.request_id for o in engine.step()]
        assert running.request_id in produced


def test_incremental_detokenization_equals_a_full_decode():
    tokenizer = Tokenizer.from_dir(resolve_model(None))
    rng = random.Random(0)
    for _ in range(20):  # random ids: byte-level tokens that split characters, special tokens, spaces
        ids = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randrange(1, 40))]
        detok, text = IncrementalDetokenizer(), ""
        for n in range(1, len(ids)):
            text += detok.step(tokenizer.decode, ids[:n])
        text += detok.step(tokenizer.decode, ids, final=True)
        assert text == tokenizer.decode(ids)
