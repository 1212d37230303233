"""Offline batches with Ray Data (cluster/batch_inference.py): the engine in `map_batches` on an actor pool gives
the same tokens as one engine in this process."""

import pyarrow as pa
import pytest

from switchyard import LLM, SamplingParams
from switchyard.cluster.batch_inference import (SwitchyardEngineStage, SwitchyardProcessorConfig,
                                                build_switchyard_processor)
from switchyard.configs.engine import EngineConfig
from switchyard.configs.model import ConfigError

OPENINGS = ["The history of", "A railway yard", "In 1990, the", "The city is", "Once", "The river", "Its name",
            "After the war,", "The first", "Music in", "The station", "A new", "During the", "The government",
            "His father", "The team", "In the north", "The line", "The album", "Many of", "The book", "She was",
            "The bridge", "Its population", "The company"]
TOPICS = ["trains", "the river", "music", "a war", "the sea", "coal", "the king", "a church", "the city", "radio",
          "football", "a canal", "the island", "steam", "the market", "gold", "the school", "a film", "the army",
          "bread"]
PROMPTS = [f"{opening} {topic}" for opening in OPENINGS for topic in TOPICS]  # 500, all different
ENGINE = EngineConfig(num_threads=1)


@pytest.mark.ray
@pytest.mark.slow
def test_500_prompts_through_ray_data_give_the_single_engines_greedy_tokens(ray_serve):
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    greedy = {"temperature": 0, "max_tokens": 8}
    processor = build_switchyard_processor(
        SwitchyardProcessorConfig(engine=ENGINE, batch_size=50, concurrency=2, num_cpus=0.5),
        preprocess=lambda row: {"text": row["text"], "prompt": row["text"], "sampling_params": greedy},
        postprocess=lambda row: {"text": row["text"], "tokens": [int(t) for t in row["generated_tokens"]],
                                 "num_generated_tokens": row["num_generated_tokens"],
                                 "finish_reason": row["finish_reason"]})
    rows = processor(ray.data.from_items([{"text": p} for p in PROMPTS])).take_all()

    reference = LLM(engine_config=ENGINE).generate(PROMPTS, SamplingParams(**greedy))
    expected = {out.prompt: out.outputs[0].token_ids for out in reference}
    assert len(rows) == len(PROMPTS) == len(expected)
    got = {row["text"]: row["tokens"] for row in rows}
    assert got == expected
    assert {(row["num_generated_tokens"], row["finish_reason"]) for row in rows} == {(8, "length")}


@pytest.mark.ray
@pytest.mark.slow
def test_chat_rows_and_per_row_sampling_params(ray_serve):
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    items = [{"messages": [{"role": "user", "content": p}], "sampling_params": {"seed": i, "max_tokens": 6}}
             if i % 2 else {"prompt": p, "sampling_params": {"temperature": 0, "max_tokens": 4}}
             for i, p in enumerate(PROMPTS[:12])]
    processor = build_switchyard_processor(SwitchyardProcessorConfig(engine=ENGINE, batch_size=4, num_cpus=0.5))
    rows = processor(ray.data.from_items(items)).take_all()

    llm = LLM(engine_config=ENGINE)
    for row in rows:
        raw = {k: v for k, v in row["sampling_params"].items() if v is not None}
        if row.get("messages") is not None:
            (out,) = llm.chat([dict(m) for m in row["messages"]], SamplingParams(**raw))
            assert raw.get("seed") is not None
        else:
            (out,) = llm.generate(row["prompt"], SamplingParams(**raw))
        assert [int(t) for t in row["generated_tokens"]] == out.outputs[0].token_ids
        assert row["generated_text"] == out.outputs[0].text
        assert row["num_input_tokens"] == len(out.prompt_token_ids)
    assert len(rows) == 12


# -- without Ray ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [("batch_size", 0), ("concurrency", 0), ("concurrency", (3, 2)),
                                          ("concurrency", (1, 2, 3)), ("num_cpus", 0)])
def test_a_bad_processor_config_fails_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"`{field}`"):
        SwitchyardProcessorConfig(**{field: value})


def test_the_stage_on_an_arrow_batch_keeps_the_columns_and_refuses_rows_without_a_prompt():
    stage = SwitchyardEngineStage(None, ENGINE, seed=None)
    # a struct column, as Arrow types it: the keys a row leaves out are null there
    batch = pa.Table.from_pylist([
        {"prompt": PROMPTS[0], "id": 7, "sampling_params": {"temperature": 0, "max_tokens": 3, "stop": ["zzz"]}},
        {"prompt": PROMPTS[1], "id": 8, "sampling_params": {"max_tokens": 5, "seed": 1}},
        {"prompt": PROMPTS[2], "id": 9, "sampling_params": None}])
    out = stage(batch).to_pylist()
    assert [row["id"] for row in out] == [7, 8, 9]
    assert [row["num_generated_tokens"] for row in out][:2] == [3, 5]
    assert out[2]["num_generated_tokens"] <= 16  # no sampling_params: SamplingParams(), vLLM's 16 tokens at most
    assert out[1]["generated_tokens"] == stage.llm.generate(
        PROMPTS[1], SamplingParams(seed=1, max_tokens=5))[0].outputs[0].token_ids
    with pytest.raises(ValueError, match="`prompt`, `messages` or `prompt_token_ids`"):
        stage(pa.Table.from_pylist([{"text": "x"}]))
