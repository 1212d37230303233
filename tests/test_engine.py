"""Engine behaviour: sampling, stopping, continuous batching, bad input."""

import pytest
import torch

from switchyard.configs.engine import EngineConfig
from switchyard.router.engine import Engine
from switchyard.router.sampling import InvalidParameter, SamplingParams
from switchyard.router.tokenizer import Tokenizer

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def engine(checkpoints):
    return Engine.from_pretrained(checkpoints["qwen3_moe"], EngineConfig(max_num_seqs=4, max_model_len=96))


def run_alone(engine, prompt, params):
    return engine.generate([prompt], params)[0]


def test_seeded_sampling_is_reproducible_and_differs_by_seed(engine):
    prompt = [5, 6, 7, 8]
    a = run_alone(engine, prompt, SamplingParams(max_tokens=16, temperature=1.0, seed=7, ignore_eos=True))
    b = run_alone(engine, prompt, SamplingParams(max_tokens=16, temperature=1.0, seed=7, ignore_eos=True))
    c = run_alone(engine, prompt, SamplingParams(max_tokens=16, temperature=1.0, seed=8, ignore_eos=True))
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


@pytest.mark.parametrize("params", [
    SamplingParams(max_tokens=12, temperature=0.8, top_k=1, seed=0, ignore_eos=True),
    SamplingParams(max_tokens=12, temperature=0.8, top_p=1e-6, seed=0, ignore_eos=True),
])
def test_top_k_1_and_tiny_top_p_are_greedy(engine, params):
    prompt = [9, 10, 11]
    assert run_alone(engine, prompt, params).token_ids == run_alone(engine, prompt, GREEDY).token_ids


def test_requests_joining_a_running_batch_get_the_same_tokens(engine):
    prompts = [[3, 4, 5], [20, 21, 22, 23, 24, 25, 26], [40, 41], [50, 51, 52, 53], [60] * 9, [70, 71, 72]]
    alone = [run_alone(engine, p, GREEDY).token_ids for p in prompts]
    # More requests than slots (4), added while others run: they join and leave between steps.
    outs = {}
    pending = list(enumerate(prompts))
    ids = {}
    for i, p in pending[:2]:
        ids[engine.add_request(p, GREEDY).request_id] = i
    steps = 0
    while engine.has_unfinished() or len(ids) < len(prompts):
        if steps == 3:
            for i, p in pending[2:]:
                ids[engine.add_request(p, GREEDY).request_id] = i
        for out in engine.step():
            if out.finished:
                outs[ids[out.request_id]] = out.token_ids
        steps += 1
    assert [outs[i] for i in range(len(prompts))] == alone
    assert engine.cache.num_free_blocks == engine.cache.num_blocks


def test_stop_string_cuts_text_and_stream_never_shows_it(engine):
    full = run_alone(engine, "The history of", SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True))
    assert len(full.text) > 6
    stop = full.text[3:6]
    seq = engine.add_request("The history of", SamplingParams(max_tokens=24, temperature=0.0, stop=(stop,),
                                                               ignore_eos=True))
    streamed = ""
    while engine.has_unfinished():
        for out in engine.step():
            streamed += out.delta_text
            final = out
    assert final.finish_reason == "stop"
    assert final.text == full.text[:full.text.find(stop)]
    assert streamed == final.text
    assert seq.blocks == []


def test_eos_stops_and_max_tokens_caps(checkpoints):
    engine = Engine.from_pretrained(checkpoints["mixtral"], EngineConfig(max_num_seqs=2, max_model_len=64))
    free = run_alone(engine, [7, 8, 9], SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True))
    assert free.finish_reason == "length" and len(free.token_ids) == 30
    eos = free.token_ids[4]  # make a token the model emits an end-of-sequence token
    engine.eos_token_ids = frozenset({eos})
    out = run_alone(engine, [7, 8, 9], SamplingParams(max_tokens=30, temperature=0.0))
    assert out.finish_reason == "stop"
    assert list(out.token_ids) == list(free.token_ids[:free.token_ids.index(eos)])


def test_context_length_limits_output(engine):
    out = run_alone(engine, list(range(3, 90)), SamplingParams(max_tokens=50, temperature=0.0, ignore_eos=True))
    assert out.finish_reason == "length" and len(out.token_ids) == 96 - 87


@pytest.mark.parametrize("prompt,match", [([], "empty"), (list(range(3, 100)), "context"), ([99999], "token ids")])
def test_bad_prompts_are_refused(engine, prompt, match):
    with pytest.raises(InvalidParameter, match=match):
        engine.add_request(prompt, GREEDY)


@pytest.mark.parametrize("kwargs,param", [
    ({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"), ({"max_tokens": 0}, "max_tokens"),
    ({"top_k": -2}, "top_k"), ({"stop": ("",)}, "stop"), ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty")])
def test_bad_sampling_parameters_name_the_parameter(kwargs, param):
    with pytest.raises(InvalidParameter) as err:
        SamplingParams(**kwargs)
    assert err.value.param == param


def test_tokenizer_and_chat_template(checkpoints):
    tok = Tokenizer.from_dir(checkpoints["olmoe"])
    text = "A switchyard sorts cars."
    assert tok.decode(tok.encode(text)) == text
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_penalties_push_repeated_tokens_down():
    from switchyard.router.sampling import sample

    logits = torch.tensor([[5.0, 4.5, 1.0], [5.0, 4.5, 1.0], [5.0, 4.5, 1.0], [5.0, 4.5, 1.0]])
    params = [GREEDY, SamplingParams(temperature=0.0, frequency_penalty=0.3),
              SamplingParams(temperature=0.0, frequency_penalty=0.3), SamplingParams(temperature=0.0, presence_penalty=0.6)]
    outputs = [[0, 0], [0], [0, 0], [0, 0, 0]]
    # no penalty keeps token 0; frequency 0.3 x 1 leaves 4.7 > 4.5; x 2 gives 4.4 < 4.5; presence counts once: 4.4
    assert sample(logits, params, [None] * 4, outputs).tolist() == [0, 0, 1, 1]
    assert logits[0, 0] == 5.0  # the caller's logits are not changed


def test_frequency_penalty_changes_greedy_output_through_the_engine(engine):
    plain = engine.generate(["yard"], SamplingParams(max_tokens=24, temperature=0.0))[0].token_ids
    penalised = engine.generate(["yard"], SamplingParams(max_tokens=24, temperature=0.0, frequency_penalty=2.0))[0]
    counts = torch.bincount(torch.tensor(list(penalised.token_ids)))
    assert list(penalised.token_ids) != list(plain) and counts.max() <= torch.bincount(torch.tensor(list(plain))).max()


def test_batched_sampling_draws_from_the_softmax_and_respects_top_k_and_top_p():
    from switchyard.router.sampling import sample

    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]])
    want = torch.softmax(logits[0] / 0.7, dim=-1)
    rows = 4000
    params = [SamplingParams(temperature=0.7)] * rows
    draws = sample(logits.expand(rows, -1).contiguous(), params, [None] * rows)
    freq = torch.bincount(draws, minlength=5).float() / rows
    assert torch.allclose(freq, want, atol=0.03), (freq, want)
    # top-k 2 keeps the two best; top-p 0.5 of [0.63, 0.23, ...] (temperature 1) keeps only the best
    cut = [SamplingParams(temperature=1.0, top_k=2)] * 500 + [SamplingParams(temperature=1.0, top_p=0.5)] * 500
    draws = sample(logits.expand(1000, -1).contiguous(), cut, [None] * 1000)
    assert set(draws[:500].tolist()) == {0, 1} and set(draws[500:].tolist()) == {0}


def test_a_seeded_row_draws_the_same_tokens_whatever_else_is_in_the_batch():
    from switchyard.router.sampling import sample

    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    seeded = SamplingParams(temperature=1.0, seed=3)
    alone = [sample(logits[2:3], [seeded], [torch.Generator().manual_seed(3)]).item() for _ in range(3)]
    others = [SamplingParams(temperature=0.9)] * 2 + [seeded] + [SamplingParams(temperature=0.0)] * 3
    gens = [None, None, torch.Generator().manual_seed(3), None, None, None]
    assert sample(logits, others, gens)[2].item() == alone[0]
