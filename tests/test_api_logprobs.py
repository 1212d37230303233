"""logprobs, top_logprobs, echo, n > 1 and several prompts through the OpenAI API, whole and streamed.

The numbers themselves are checked against transformers in tests/test_logprobs.py; here, the echo that
evaluation harnesses use is checked against transformers once more, end to end."""

import asyncio

import httpx
import openai
import pytest
import torch
from transformers import AutoModelForCausalLM

from served_app import served_app

MODEL = "tiny"


@pytest.fixture(scope="module")
def app(checkpoints):
    with served_app(checkpoints["qwen3_moe"], MODEL, max_num_seqs=8) as app:
        yield app


def run(app, make):
    async def go():
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        return await make(openai.AsyncOpenAI(api_key="none", base_url="http://test/v1", http_client=http))

    return asyncio.run(go())


async def collect(chunks):
    return [c async for c in await chunks]


def test_echo_scores_the_prompt_as_transformers_does(app, checkpoints):
    """lm-evaluation-harness's loglikelihood request: echo, max_tokens 0, logprobs k."""
    prompt = [5, 77, 123, 9, 250, 31, 64]
    got = run(app, lambda c: c.completions.create(model=MODEL, prompt=prompt, echo=True, max_tokens=0, logprobs=2))
    choice = got.choices[0]
    assert got.usage.completion_tokens == 0 and got.usage.prompt_tokens == len(prompt)
    tokenizer = app.state.served.engine.engine.tokenizer
    assert choice.text == tokenizer.decode(prompt)
    lp = choice.logprobs
    assert len(lp.tokens) == len(prompt) and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    reference = AutoModelForCausalLM.from_pretrained(checkpoints["qwen3_moe"], dtype=torch.float32).eval()
    with torch.no_grad():
        want = torch.log_softmax(reference(input_ids=torch.tensor([prompt])).logits[0], dim=-1)
    for p in range(1, len(prompt)):
        assert abs(lp.token_logprobs[p] - want[p - 1, prompt[p]].item()) < 1e-4
        assert lp.tokens[p] in lp.top_logprobs[p] and len(lp.top_logprobs[p]) in (2, 3)
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)


def test_completion_logprobs_whole_and_streamed(app):
    args = dict(model=MODEL, prompt="The history of", max_tokens=8, temperature=0, logprobs=3, echo=True)
    response = run(app, lambda c: c.completions.create(**args))
    whole, generated = response.choices[0], response.usage.completion_tokens
    chunks = run(app, lambda c: collect(c.completions.create(stream=True, **args)))
    lp = whole.logprobs
    assert len(lp.tokens) == response.usage.prompt_tokens + generated and lp.token_logprobs[0] is None
    streamed = {"tokens": [], "token_logprobs": [], "text_offset": []}
    for ch in chunks:
        if ch.choices and ch.choices[0].logprobs is not None:
            for key in streamed:
                streamed[key] += getattr(ch.choices[0].logprobs, key)
    assert streamed["tokens"] == lp.tokens and streamed["text_offset"] == lp.text_offset
    assert streamed["token_logprobs"] == pytest.approx(lp.token_logprobs, abs=1e-6)
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == whole.text
    assert whole.text.startswith("The history of")
    for value, top in zip(lp.token_logprobs[-generated:], lp.top_logprobs[-generated:]):
        assert value == pytest.approx(max(top.values()), abs=1e-6)  # greedy: each token the most likely


def test_chat_logprobs_whole_and_streamed(app):
    args = dict(model=MODEL, messages=[{"role": "user", "content": "Tell me about yards."}], max_tokens=6,
                temperature=0, logprobs=True, top_logprobs=2)
    whole = run(app, lambda c: c.chat.completions.create(**args))
    content = whole.choices[0].logprobs.content
    assert len(content) == whole.usage.completion_tokens
    assert all(len(e.top_logprobs) == 2 and e.logprob == pytest.approx(e.top_logprobs[0].logprob, abs=1e-6)
               for e in content)
    for e in content:  # a token's exact bytes; its text, unless it is part of a character: then its bytes named
        try:
            assert e.token == bytes(e.bytes).decode("utf-8")
        except UnicodeDecodeError:
            assert e.token == "bytes:" + "".join(f"\\x{b:02x}" for b in e.bytes)
    chunks = run(app, lambda c: collect(c.chat.completions.create(stream=True, **args)))
    streamed = [e for ch in chunks if ch.choices and ch.choices[0].logprobs for e in ch.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in content]
    no_logprobs = run(app, lambda c: c.chat.completions.create(**{**args, "logprobs": False, "top_logprobs": None}))
    assert no_logprobs.choices[0].logprobs is None


def test_n_choices_are_distinct_reproducible_and_streamed_alike(app):
    args = dict(model=MODEL, prompt="A yard", max_tokens=8, temperature=1.0, seed=11, n=3)
    first = run(app, lambda c: c.completions.create(**args))
    again = run(app, lambda c: c.completions.create(**args))
    chunks = run(app, lambda c: collect(c.completions.create(stream=True, **args)))
    texts = [ch.text for ch in sorted(first.choices, key=lambda ch: ch.index)]
    assert [ch.index for ch in first.choices] == [0, 1, 2]
    assert texts == [ch.text for ch in again.choices]
    assert len(set(texts)) > 1, "n choices with one seed should not all be the same sample"
    streamed = ["".join(ch.choices[0].text for ch in chunks if ch.choices and ch.choices[0].index == i)
                for i in range(3)]
    assert streamed == texts
    assert first.usage.completion_tokens == 3 * 8 or any(ch.finish_reason == "stop" for ch in first.choices)


def test_several_prompts_in_one_request_equal_one_request_each(app):
    prompts = ["The history of", "A switchyard", "7"]
    both = run(app, lambda c: c.completions.create(model=MODEL, prompt=prompts, max_tokens=6, temperature=0, n=2))
    assert [ch.index for ch in both.choices] == list(range(6))
    for i, prompt in enumerate(prompts):
        one = run(app, lambda c: c.completions.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0))
        assert both.choices[2 * i].text == both.choices[2 * i + 1].text == one.choices[0].text
    assert both.usage.prompt_tokens == sum(
        run(app, lambda c: c.completions.create(model=MODEL, prompt=p, max_tokens=1)).usage.prompt_tokens
        for p in prompts)


def test_several_token_id_prompts(app):
    prompts = [[5, 6, 7], [9, 10]]
    both = run(app, lambda c: c.completions.create(model=MODEL, prompt=prompts, max_tokens=4, temperature=0))
    for prompt, choice in zip(prompts, both.choices):
        one = run(app, lambda c: c.completions.create(model=MODEL, prompt=prompt, max_tokens=4, temperature=0))
        assert choice.text == one.choices[0].text
    assert both.usage.prompt_tokens == 5
