"""`SamplingParams` of the Python API: vLLM's names and meanings, and the model's sampling defaults.

A field left out (None) takes the model's `generation_config.json`, else the fallback below, exactly as
`switchyard generate` and the OpenAI API resolve a flag or a request field left out (router/generation_config.py):
`temperature=0` asks for greedy decoding and drops the file's defaults with it. Two differences from vLLM's
offline `LLM`, both to match `switchyard generate`: vLLM applies the file only when no SamplingParams is given
at all, and falls back to temperature 1.0 where the model sets none; here every field left out takes the file,
and a model that sets no temperature decodes greedily.

vLLM's fields that Switchyard does not implement (`min_p`, `min_tokens`, `best_of`, ...) are not here: passing
one is a TypeError, not a silent no-op.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from switchyard.router import sampling
from switchyard.router.generation_config import sampling_params as with_defaults
from switchyard.router.sampling import InvalidParameter

# What a field left out becomes when the model's generation_config.json does not set it either (the CLI's).
FALLBACK_DEFAULTS = {"temperature": 0.0}
INT64 = 2**63


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1  # completions per prompt; with a seed, completion j samples from seed + j
    max_tokens: int = 16  # vLLM's default
    temperature: float | None = None  # 0 = greedy
    top_p: float | None = None
    top_k: int | None = None  # 0 or -1 = off (vLLM writes both)
    seed: int | None = None
    stop: str | list[str] | tuple[str, ...] | None = None  # the text is cut before a stop string
    stop_token_ids: list[int] | tuple[int, ...] | None = None
    ignore_eos: bool = False
    presence_penalty: float | None = None  # OpenAI's, on generated tokens
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None  # transformers' and vLLM's, on prompt and generated tokens
    logprobs: int | None = None  # per generated token: its logprob and this many most likely alternatives
    prompt_logprobs: int | None = None  # the same for each prompt token after the first

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise InvalidParameter("n", f"n must be an integer >= 1, got {self.n!r}")
        self.resolve({})  # a value out of range fails here, naming it, not at generate

    def resolve(self, defaults: dict[str, float | int]) -> sampling.SamplingParams:
        """The engine's parameters of completion 0: the fields given, else `defaults` (the model's
        generation_config.json), else FALLBACK_DEFAULTS, else the engine's own."""
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        top_k = 0 if self.top_k == -1 else self.top_k
        return with_defaults({**FALLBACK_DEFAULTS, **defaults}, max_tokens=self.max_tokens,
                             temperature=self.temperature, top_p=self.top_p, top_k=top_k, seed=self.seed,
                             stop=stop, stop_token_ids=tuple(self.stop_token_ids or ()), ignore_eos=self.ignore_eos,
                             presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
                             repetition_penalty=self.repetition_penalty, logprobs=self.logprobs,
                             prompt_logprobs=self.prompt_logprobs)

    def per_completion(self, defaults: dict[str, float | int]) -> list[sampling.SamplingParams]:
        """The engine's parameters of each of the n completions: with a seed, completion j samples from
        seed + j (kept an int64), so that they differ and each is reproducible (as the OpenAI API's `n`)."""
        first = self.resolve(defaults)
        if self.seed is None:
            return [first] * self.n
        return [first] + [dataclasses.replace(first, seed=(self.seed + j + INT64) % (2 * INT64) - INT64)
                          for j in range(1, self.n)]

    @classmethod
    def from_dict(cls, fields: dict) -> "SamplingParams":
        """From a row's `sampling_params` (Ray Data's batch processor): unknown keys fail naming themselves."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise InvalidParameter(unknown[0], f"unknown sampling parameter {unknown[0]!r}; "
                                               f"known: {', '.join(sorted(known))}")
        return cls(**fields)
