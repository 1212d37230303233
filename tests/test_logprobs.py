"""Logprobs of generated and prompt tokens equal log_softmax of transformers' own logits (raw: before the
penalties and temperature), also when the prompt is prefilled in chunks and shares its steps with others."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from switchyard.configs.engine import EngineConfig
from switchyard.router.engine import Engine
from switchyard.router.logprobs import token_logprobs
from switchyard.router.sampling import SamplingParams
from tiny_models import VOCAB

K = 3


def reference_logprobs(path, tokens: list[int]) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tokens])).logits[0]  # [S, V]
    return torch.log_softmax(logits, dim=-1)  # row p scores the token at p + 1


def check(entry, want_row: torch.Tensor, token: int, k: int = K):
    assert entry.token_id == token
    assert abs(entry.logprob - want_row[token].item()) < 1e-4
    values, ids = want_row.topk(k)
    assert [i for i, _ in entry.top] == ids.tolist()
    torch.testing.assert_close(torch.tensor([v for _, v in entry.top]), values, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["qwen3_moe", "deepseek_v3"])
@pytest.mark.parametrize("chunk", [2048, 5])
def test_logprobs_match_transformers(checkpoints, family, chunk):
    path = checkpoints[family]
    engine = Engine.from_pretrained(path, EngineConfig(max_num_seqs=4, max_model_len=64,
                                                       max_num_batched_tokens=chunk))
    gen = torch.Generator().manual_seed(7)
    prompt = torch.randint(3, VOCAB, (13,), generator=gen).tolist()
    other = torch.randint(3, VOCAB, (9,), generator=gen).tolist()
    # sampled with penalties and temperature: the logprobs stay those of the raw logits
    scored = SamplingParams(max_tokens=6, temperature=0.8, seed=3, ignore_eos=True, frequency_penalty=1.5,
                            presence_penalty=0.5, logprobs=K, prompt_logprobs=K)
    out, _ = engine.generate([prompt, other], [scored, SamplingParams(max_tokens=4, temperature=0)])
    want = reference_logprobs(path, prompt + list(out.token_ids))
    assert len(out.logprobs) == len(out.token_ids) == 6
    for i, (token, entry) in enumerate(zip(out.token_ids, out.logprobs)):
        check(entry, want[len(prompt) - 1 + i], token)
    assert len(out.prompt_logprobs) == len(prompt) and out.prompt_logprobs[0] is None
    for p, entry in enumerate(out.prompt_logprobs[1:], start=1):
        check(entry, want[p - 1], prompt[p])


def test_no_logprobs_unless_asked(checkpoints):
    engine = Engine.from_pretrained(checkpoints["qwen3_moe"], EngineConfig(max_num_seqs=2, max_model_len=64))
    out = engine.generate([[5, 6, 7]], SamplingParams(max_tokens=3, temperature=0))[0]
    assert out.logprobs == () and out.prompt_logprobs is None
    out = engine.generate([[5, 6, 7]], SamplingParams(max_tokens=3, temperature=0, logprobs=0))[0]
    assert len(out.logprobs) == len(out.token_ids) and all(e.top == () for e in out.logprobs)


def test_token_logprobs_of_a_row_with_minus_infinity():
    logits = torch.tensor([[0.0, float("-inf"), 1.0]])
    (entry,) = token_logprobs(logits, [1], [2])
    assert entry.logprob == float("-inf") and [i for i, _ in entry.top] == [2, 0]
