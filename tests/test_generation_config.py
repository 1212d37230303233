"""A model folder's generation_config.json as the sampling defaults (switchyard generate and the API), and the
repetition penalty against transformers' own logits processor."""

import asyncio
import json
import shutil

import httpx
import pytest
import torch

from switchyard.cluster import cli
from switchyard.cluster.api.openai_routes import ServedModel, build_openai_app
from switchyard.configs.defaults import DEMO_MODEL_DIR
from switchyard.configs.engine import EngineConfig
from switchyard.configs.model import ConfigError
from switchyard.router.async_engine import AsyncEngine
from switchyard.router.engine import Engine
from switchyard.router.generation_config import load_sampling_defaults, sampling_params
from switchyard.router.sampling import SamplingParams, apply_penalties

FILE_DEFAULTS = {"temperature": 0.9, "top_k": 5, "repetition_penalty": 1.3}


@pytest.fixture(scope="module")
def model_dir(checkpoints, tmp_path_factory):
    """The tiny Qwen3-MoE checkpoint with sampling defaults in its generation_config.json."""
    path = tmp_path_factory.mktemp("gen-config") / "model"
    shutil.copytree(checkpoints["qwen3_moe"], path)
    (path / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "do_sample": True,
                                                             "max_new_tokens": 64, **FILE_DEFAULTS}))
    return path


@pytest.fixture(scope="module")
def engine(model_dir):
    return Engine.from_pretrained(model_dir, EngineConfig(max_num_seqs=4, max_model_len=128))


def write(tmp_path, content) -> str:
    (tmp_path / "generation_config.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return str(tmp_path)


def test_repetition_penalty_matches_transformers():
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 4  # [B, V], positive and negative scores
    prompts = [[1, 2, 3, 3], [7, 8], [4]]
    outputs = [[3, 9, 9], [], [4, 10]]
    for penalty in (1.3, 0.7):
        params = [SamplingParams(temperature=0.0, repetition_penalty=penalty)] * 3
        got = apply_penalties(logits, params, outputs, prompts)
        for row in range(3):
            ids = torch.tensor([prompts[row] + outputs[row]])  # transformers penalises the whole input so far
            want = RepetitionPenaltyLogitsProcessor(penalty)(ids, logits[row:row + 1].clone())
            torch.testing.assert_close(got[row:row + 1], want, rtol=0, atol=0)
    assert not torch.equal(got, logits)


def test_sampling_keys_are_read_and_others_ignored(tmp_path):
    folder = write(tmp_path, {"temperature": 0.7, "top_p": 0.95, "top_k": 20, "repetition_penalty": 1.1,
                              "frequency_penalty": 0.5, "presence_penalty": 0.2, "do_sample": False,
                              "max_new_tokens": 5, "eos_token_id": [2, 4], "min_p": None, "some_new_key": "x"})
    assert load_sampling_defaults(folder) == {"temperature": 0.7, "top_p": 0.95, "top_k": 20,
                                              "repetition_penalty": 1.1, "presence_penalty": 0.2,
                                              "frequency_penalty": 0.5}
    assert load_sampling_defaults(write(tmp_path, {"top_k": -1})) == {"top_k": 0}  # vLLM's "off"
    assert load_sampling_defaults(tmp_path / "no-such-folder") == {}


@pytest.mark.parametrize("content,key", [
    ({"temperature": -0.5}, "temperature"), ({"top_p": 0}, "top_p"), ({"top_k": 2.5}, "top_k"),
    ({"repetition_penalty": 0}, "repetition_penalty"), ({"frequency_penalty": 3}, "frequency_penalty"),
    ({"temperature": "hot"}, "temperature"), ({"top_p": True}, "top_p"), ("{not json", "not valid JSON")])
def test_a_bad_file_fails_naming_the_key(tmp_path, content, key):
    with pytest.raises(ConfigError, match=key) as err:
        load_sampling_defaults(write(tmp_path, content))
    assert "generation_config.json" in str(err.value)


def test_given_fields_win_and_temperature_zero_is_plain_greedy():
    assert sampling_params(FILE_DEFAULTS, max_tokens=4) == SamplingParams(max_tokens=4, **FILE_DEFAULTS)
    assert sampling_params(FILE_DEFAULTS, top_k=None, top_p=0.5).top_k == 5
    assert sampling_params(FILE_DEFAULTS, top_k=0, top_p=0.5) == SamplingParams(
        temperature=0.9, top_k=0, top_p=0.5, repetition_penalty=1.3)
    assert sampling_params(FILE_DEFAULTS, temperature=0.0) == SamplingParams(temperature=0.0)
    assert sampling_params(FILE_DEFAULTS, temperature=0.0, frequency_penalty=0.5) == SamplingParams(
        temperature=0.0, frequency_penalty=0.5)


def run_generate(capsys, *argv) -> list[dict]:
    assert cli.main(["generate", "--json", "--max-tokens", "12", *argv]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_generate_follows_the_file_unless_told_otherwise(model_dir, engine, capsys):
    prompt = "The history of"
    sampled = engine.generate([prompt], SamplingParams(max_tokens=12, seed=3, **FILE_DEFAULTS))[0]
    greedy = engine.generate([prompt], SamplingParams(max_tokens=12, temperature=0.0))[0]
    assert list(sampled.token_ids) != list(greedy.token_ids)
    assert run_generate(capsys, "--model", str(model_dir), "--seed", "3", prompt)[0]["token_ids"] == list(
        sampled.token_ids)
    assert run_generate(capsys, "--model", str(model_dir), "--temperature", "0", prompt)[0]["token_ids"] == list(
        greedy.token_ids)
    hotter = engine.generate([prompt], SamplingParams(max_tokens=12, seed=3, **{**FILE_DEFAULTS, "top_k": 0}))[0]
    assert run_generate(capsys, "--model", str(model_dir), "--seed", "3", "--top-k", "0", prompt)[0][
        "token_ids"] == list(hotter.token_ids)


def test_generate_refuses_a_bad_file_before_loading(checkpoints, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(checkpoints["qwen3_moe"], folder)
    write(folder, {"temperature": 5})
    assert cli.main(["generate", "--model", str(folder), "hi"]) == 2
    err = capsys.readouterr().err
    assert "generation_config.json" in err and "temperature" in err


def test_the_api_fills_left_out_fields_from_the_file(model_dir, engine):
    app = build_openai_app()
    served = Engine.from_pretrained(model_dir, EngineConfig(max_num_seqs=4, max_model_len=128))
    app.state.served = ServedModel("m", AsyncEngine(served), 128, sampling_defaults=load_sampling_defaults(model_dir))
    prompt = "A railway yard"

    async def complete(**fields) -> str:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            r = await http.post("/v1/completions", json={"model": "m", "prompt": prompt, "max_tokens": 10, **fields})
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["text"]

    try:
        def want(**params) -> str:
            return engine.generate([prompt], SamplingParams(max_tokens=10, **params))[0].text

        assert asyncio.run(complete(seed=7)) == want(seed=7, **FILE_DEFAULTS)
        assert asyncio.run(complete(temperature=0)) == want(temperature=0.0)
        assert asyncio.run(complete(seed=7, repetition_penalty=1.0, top_k=0)) == want(seed=7, temperature=0.9)
    finally:
        app.state.served.engine.shutdown()



def test_the_built_in_model_samples_by_default():
    # the settings `switchyard bench sampling` picked (docs/serving.md, "What was measured")
    assert load_sampling_defaults(DEMO_MODEL_DIR) == {"temperature": 0.8, "top_p": 0.9, "top_k": 0,
                                                      "repetition_penalty": 1.2}
