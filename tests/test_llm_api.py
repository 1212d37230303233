"""The Python API (`from switchyard import LLM, SamplingParams`): vLLM's shapes, the model's sampling defaults,
streaming, bad input, and the same tokens as `switchyard generate` run as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from switchyard import LLM, CompletionOutput, RequestOutput, SamplingParams
from switchyard.configs.defaults import DEMO_MODEL_DIR
from switchyard.configs.model import ConfigError
from switchyard.router.generation_config import load_sampling_defaults
from switchyard.router.sampling import InvalidParameter

PROMPTS = ["The history of", "A railway yard", "In 1990, the", "The city is"]


@pytest.fixture(scope="module")
def llm():
    return LLM()  # the built-in model, with `switchyard generate`'s engine defaults


def tokens(outputs: list[RequestOutput]) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in outputs]


def cli_generate(*args: str) -> list[dict]:
    """`switchyard generate --json ARGS` as a user runs it: the installed script, in its own process."""
    script = Path(sys.executable).parent / "switchyard"
    done = subprocess.run([str(script), "generate", "--json", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


# -- the same tokens as `switchyard generate` ------------------------------------------------------------------
@pytest.mark.slow
def test_greedy_tokens_match_the_cli(llm):
    cli = cli_generate("--temperature", "0", "--max-tokens", "16", *PROMPTS)
    ours = llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=16))
    assert [c["token_ids"] for c in cli] == tokens(ours)
    assert [c["text"] for c in cli] == [o.outputs[0].text for o in ours]
    assert [c["finish_reason"] for c in cli] == [o.outputs[0].finish_reason for o in ours]


@pytest.mark.slow
def test_seeded_sampling_with_the_models_defaults_matches_the_cli(llm):
    # only the seed given: temperature, top-p and repetition penalty come from generation_config.json on both sides
    cli = cli_generate("--seed", "7", "--max-tokens", "16", *PROMPTS)
    ours = llm.generate(PROMPTS, SamplingParams(seed=7, max_tokens=16))
    assert [c["token_ids"] for c in cli] == tokens(ours)
    assert SamplingParams(seed=7).resolve(llm.sampling_defaults).temperature == 0.8  # sampled, not greedy again


@pytest.mark.slow
def test_chat_with_explicit_sampling_matches_the_cli(llm):
    cli = cli_generate("--chat", "--temperature", "1.0", "--top-k", "50", "--top-p", "0.95", "--seed", "3",
                       "--frequency-penalty", "0.5", "--max-tokens", "12", *PROMPTS)
    params = SamplingParams(temperature=1.0, top_k=50, top_p=0.95, seed=3, frequency_penalty=0.5, max_tokens=12)
    ours = llm.chat([[{"role": "user", "content": p}] for p in PROMPTS], params)
    assert [c["token_ids"] for c in cli] == tokens(ours)


# -- shapes, as vLLM's -------------------------------------------------------------------------------------
def test_outputs_are_shaped_as_vllms(llm):
    outs = llm.generate(PROMPTS[:2], SamplingParams(temperature=0, max_tokens=5))
    tokenizer = llm.get_tokenizer()
    assert [o.prompt for o in outs] == PROMPTS[:2]
    assert [o.prompt_token_ids for o in outs] == [tokenizer.encode(p) for p in PROMPTS[:2]]
    assert len({o.request_id for o in outs}) == 2
    for o in outs:
        assert o.finished and o.prompt_logprobs is None
        (c,) = o.outputs
        assert isinstance(c, CompletionOutput) and c.index == 0 and c.finished()
        assert len(c.token_ids) == 5 and c.finish_reason == "length"
        assert c.text == tokenizer.decode(c.token_ids)
        assert c.cumulative_logprob is None and c.logprobs is None


def test_a_single_prompt_token_ids_and_per_prompt_params(llm):
    greedy = SamplingParams(temperature=0, max_tokens=6)
    (by_text,) = llm.generate("The history of", greedy)
    (by_ids,) = llm.generate({"prompt_token_ids": by_text.prompt_token_ids}, greedy)
    assert by_ids.prompt is None and by_ids.outputs[0].token_ids == by_text.outputs[0].token_ids
    mixed = llm.generate(PROMPTS[:2], [greedy, SamplingParams(temperature=0, max_tokens=3)])
    assert [len(t) for t in tokens(mixed)] == [6, 3]


def test_logprobs_in_vllms_shape(llm):
    (out,) = llm.generate("The history of", SamplingParams(temperature=0, max_tokens=4, logprobs=3,
                                                            prompt_logprobs=1))
    c = out.outputs[0]
    assert len(c.logprobs) == len(c.token_ids) == 4
    for token, entry in zip(c.token_ids, c.logprobs):
        assert len(entry) == 3 and entry[token].rank == 1  # greedy: the chosen token is the most likely
        assert sorted(e.rank for e in entry.values()) == [1, 2, 3]
        assert entry[token].decoded_token == llm.get_tokenizer().decode([token], skip_special_tokens=False)
    assert c.cumulative_logprob == pytest.approx(sum(e[t].logprob for t, e in zip(c.token_ids, c.logprobs)))
    assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(out.prompt_token_ids)
    for token, entry in zip(out.prompt_token_ids[1:], out.prompt_logprobs[1:]):
        assert token in entry and entry[token].logprob <= 0


def test_n_completions_sample_from_seed_plus_index(llm):
    (both,) = llm.generate("Once", SamplingParams(n=2, seed=11, max_tokens=8))
    assert [c.index for c in both.outputs] == [0, 1]
    for j in (0, 1):
        (alone,) = llm.generate("Once", SamplingParams(seed=11 + j, max_tokens=8))
        assert both.outputs[j].token_ids == alone.outputs[0].token_ids


def test_chat_applies_the_models_template(llm):
    conversation = [{"role": "user", "content": "Tell me about trains."}]
    params = SamplingParams(temperature=0, max_tokens=6)
    (chat,) = llm.chat(conversation, params)
    prompt = llm.get_tokenizer().apply_chat_template(conversation)
    assert chat.prompt == prompt and prompt.endswith("assistant\n")
    assert chat.outputs[0].token_ids == llm.generate(prompt, params)[0].outputs[0].token_ids


# -- sampling defaults ---------------------------------------------------------------------------------------
def test_fields_left_out_take_generation_config_and_greedy_drops_them(llm):
    defaults = load_sampling_defaults(DEMO_MODEL_DIR)
    assert defaults["temperature"] == 0.8 and defaults["repetition_penalty"] == 1.2
    resolved = SamplingParams(seed=1).resolve(defaults)
    assert (resolved.temperature, resolved.top_p, resolved.repetition_penalty) == (0.8, 0.9, 1.2)
    assert SamplingParams(top_p=0.5).resolve(defaults).top_p == 0.5  # given wins
    greedy = SamplingParams(temperature=0).resolve(defaults)
    assert greedy.greedy and greedy.repetition_penalty == 1.0
    assert SamplingParams().resolve({}).greedy  # a model that sets nothing decodes greedily, as the CLI
    assert SamplingParams(top_k=-1).resolve({}).top_k == 0  # vLLM's "off"
    assert llm.get_default_sampling_params().resolve(defaults) == SamplingParams().resolve(defaults)


def test_llm_seed_makes_unseeded_runs_repeat():
    first, second = LLM(seed=5, max_num_seqs=4), LLM(seed=5, max_num_seqs=4)
    params = SamplingParams(max_tokens=6)  # the model's defaults: sampled, no seed of its own
    assert tokens(first.generate(PROMPTS[:2], params)) == tokens(second.generate(PROMPTS[:2], params))
    assert first.model_path == DEMO_MODEL_DIR and first.engine.config.max_num_seqs == 4


# -- streaming ---------------------------------------------------------------------------------------------
def test_stream_grows_to_the_same_result_as_generate(llm):
    params = SamplingParams(seed=2, max_tokens=10, stop=[" the "])
    final, seen = {}, {p: [] for p in PROMPTS}
    for partial in llm.generate_stream(PROMPTS, params):
        c = partial.outputs[0]
        seen[partial.prompt].append((c.text, c.token_ids))
        assert not final.get(partial.prompt), "an output after the last"
        final[partial.prompt] = partial.finished
    assert all(final.values())
    whole = llm.generate(PROMPTS, params)
    for out in whole:
        steps = seen[out.prompt]
        assert len(steps) > 1
        assert steps[-1] == (out.outputs[0].text, out.outputs[0].token_ids)
        for (text, ids), (later_text, later_ids) in zip(steps, steps[1:]):
            assert later_text.startswith(text) and later_ids[:len(ids)] == ids
            assert " the " not in later_text  # held back until it cannot become the stop string


def test_leaving_a_stream_early_aborts_what_is_left(llm):
    stream = llm.generate_stream(PROMPTS, SamplingParams(temperature=0, max_tokens=50))
    next(stream)
    stream.close()
    assert not llm.engine.has_unfinished()
    assert llm.generate("Once", SamplingParams(temperature=0, max_tokens=2))[0].finished


# -- bad input -----------------------------------------------------------------------------------------------
def test_bad_sampling_params_fail_at_construction_naming_the_field():
    with pytest.raises(InvalidParameter, match="temperature") as err:
        SamplingParams(temperature=5)
    assert err.value.param == "temperature"
    with pytest.raises(InvalidParameter, match="n must"):
        SamplingParams(n=0)
    with pytest.raises(TypeError):
        SamplingParams(min_p=0.1)  # a vLLM field Switchyard does not implement: refused, not ignored
    with pytest.raises(InvalidParameter, match="min_p"):
        SamplingParams.from_dict({"min_p": 0.1})


def test_a_bad_prompt_fails_the_call_before_anything_runs(llm):
    too_long = {"prompt_token_ids": [5] * llm.engine.config.max_model_len}
    with pytest.raises(InvalidParameter, match="context"):
        llm.generate(["The history of", too_long])
    assert not llm.engine.has_unfinished()
    with pytest.raises(TypeError, match="prompt_token_ids"):
        llm.generate([[1, 2, 3]])
    with pytest.raises(ValueError, match="one per prompt"):
        llm.generate(PROMPTS, [SamplingParams()])


def test_a_missing_model_folder_fails_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="not a model folder"):
        LLM(str(tmp_path))
    with pytest.raises(ConfigError, match="max_num_seqs"):
        LLM(max_num_seqs=0)


# -- the package ---------------------------------------------------------------------------------------------
def test_importing_the_engine_does_not_import_the_api():
    code = ("import sys, switchyard.router.engine, switchyard.cluster.app\n"
            "assert 'switchyard.router.llm' not in sys.modules\n"
            "from switchyard import LLM, SamplingParams\n"
            "assert LLM.__module__ == 'switchyard.router.llm'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
