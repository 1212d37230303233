"""Offline batches on a Ray cluster: Switchyard's engine in Ray Data's `map_batches`.

Shaped as Ray's own LLM batch processor (`ray.data.llm.build_llm_processor` with a processor config): a
typed config, optional `preprocess` and `postprocess` functions on rows, and a callable class that holds one
engine (an `LLM`, router/llm.py) per actor of a pool of `concurrency` actors, each taking `batch_size` rows at
a time and running them together, continuously batched.

    config = SwitchyardProcessorConfig(batch_size=64, concurrency=2)   # the built-in model
    processor = build_switchyard_processor(
        config,
        preprocess=lambda row: {"prompt": row["text"], "sampling_params": {"temperature": 0, "max_tokens": 32}},
        postprocess=lambda row: {"text": row["text"], "answer": row["generated_text"]})
    answers = processor(ray.data.read_parquet(...)).take_all()

The engine's rows: `prompt` (text), `messages` (a chat, through the model's chat template) or
`prompt_token_ids`, and optionally `sampling_params`, a dict of SamplingParams fields (router/llm_params.py);
a field left out, or None, takes the model's generation_config.json, as everywhere else. The engine adds
`generated_text`, `generated_tokens`, `num_generated_tokens`, `num_input_tokens` and `finish_reason` (Ray's
names) and keeps every other column. Ray stays in this file: the engine does not know it runs in an actor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pyarrow as pa
from ray.data import ActorPoolStrategy

from switchyard.configs.engine import EngineConfig
from switchyard.configs.model import ConfigError
from switchyard.router.llm import LLM
from switchyard.router.llm_params import SamplingParams

Row = dict
OUTPUT_COLUMNS = ("generated_text", "generated_tokens", "num_generated_tokens", "num_input_tokens", "finish_reason")


@dataclass(frozen=True)
class SwitchyardProcessorConfig:
    model_source: str | None = None  # a Hugging Face folder on every node; None: the built-in model
    engine: EngineConfig = EngineConfig(num_threads=1)  # one actor's engine; one thread: actors share the cores
    batch_size: int = 32  # rows an actor takes at a time, and runs together
    concurrency: int | tuple[int, int] = 1  # actors (engines); (m, n): an autoscaling pool of m to n
    num_cpus: float = 1.0  # Ray's logical CPUs an actor holds
    seed: int | None = None  # each engine's LLM(seed=...): rows without a seed of their own repeat run to run

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"processor field `batch_size` must be an integer >= 1, got {self.batch_size!r}")
        sizes = self.concurrency if isinstance(self.concurrency, tuple) else (self.concurrency,)
        if not 1 <= len(sizes) <= 2 or any(not isinstance(s, int) or s < 1 for s in sizes) or sizes[0] > sizes[-1]:
            raise ConfigError(f"processor field `concurrency` must be an integer >= 1 or a pair (m, n) with "
                              f"1 <= m <= n, got {self.concurrency!r}")
        if not self.num_cpus > 0:
            raise ConfigError(f"processor field `num_cpus` must be > 0, got {self.num_cpus}")


class SwitchyardEngineStage:
    """The callable class of `map_batches`: one engine per actor, loaded once, a batch of rows per call."""

    def __init__(self, model_source: str | None, engine: EngineConfig, seed: int | None):
        self.llm = LLM(model_source, engine_config=engine, seed=seed)

    def __call__(self, batch: pa.Table) -> pa.Table:
        # Arrow batches, read with to_pylist: numpy's view of a struct column turns an integer field with a
        # null in another row into floats (a seed of 1.0), which SamplingParams rightly refuses.
        rows = batch.to_pylist()
        prompts = [self._prompt(row, batch.column_names) for row in rows]
        params = [SamplingParams.from_dict({k: v for k, v in row["sampling_params"].items() if v is not None})
                  if row.get("sampling_params") is not None else SamplingParams() for row in rows]
        outputs = self.llm.generate(prompts, params)
        completions = [out.outputs[0] for out in outputs]
        columns = {
            "generated_text": pa.array([c.text for c in completions], pa.string()),
            "generated_tokens": pa.array([c.token_ids for c in completions], pa.list_(pa.int64())),
            "num_generated_tokens": pa.array([len(c.token_ids) for c in completions], pa.int64()),
            "num_input_tokens": pa.array([len(out.prompt_token_ids) for out in outputs], pa.int64()),
            "finish_reason": pa.array([c.finish_reason for c in completions], pa.string())}
        for name, values in columns.items():  # an input column of the same name is replaced
            if name in batch.column_names:
                batch = batch.drop_columns([name])
            batch = batch.append_column(name, values)
        return batch

    def _prompt(self, row: Row, columns: list[str]) -> str | dict:
        if row.get("messages") is not None:
            messages = [{k: v for k, v in m.items() if v is not None} for m in row["messages"]]
            return self.llm.get_tokenizer().apply_chat_template(messages)
        if row.get("prompt_token_ids") is not None:
            return {"prompt_token_ids": row["prompt_token_ids"]}
        if row.get("prompt") is not None:
            return row["prompt"]
        raise ValueError(f"a row needs `prompt`, `messages` or `prompt_token_ids`; this batch has columns "
                         f"{sorted(columns)} (map your rows onto one of them with `preprocess`)")


@dataclass(frozen=True)
class Processor:
    """preprocess (a row map) → the engine stage (`map_batches` on an actor pool) → postprocess (a row map).
    Calling it on a Dataset returns a Dataset; nothing runs until that one is consumed."""

    config: SwitchyardProcessorConfig
    preprocess: Callable[[Row], Row] | None = None
    postprocess: Callable[[Row], Row] | None = None

    def __call__(self, dataset):
        if self.preprocess is not None:
            dataset = dataset.map(self.preprocess)
        config = self.config
        sizes = config.concurrency if isinstance(config.concurrency, tuple) else (config.concurrency,) * 2
        dataset = dataset.map_batches(
            SwitchyardEngineStage, batch_size=config.batch_size, batch_format="pyarrow",
            compute=ActorPoolStrategy(min_size=sizes[0], max_size=sizes[1]), num_cpus=config.num_cpus,
            fn_constructor_kwargs=dict(model_source=config.model_source, engine=config.engine, seed=config.seed))
        if self.postprocess is not None:
            dataset = dataset.map(self.postprocess)
        return dataset


def build_switchyard_processor(config: SwitchyardProcessorConfig, preprocess: Callable[[Row], Row] | None = None,
                               postprocess: Callable[[Row], Row] | None = None) -> Processor:
    """As `ray.data.llm.build_llm_processor`: `preprocess` maps an input row onto the engine's columns
    (`prompt` or `messages`, and `sampling_params`), `postprocess` maps a row with the engine's outputs onto
    what to keep."""
    return Processor(config, preprocess, postprocess)
