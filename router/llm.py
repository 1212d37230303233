"""`LLM`: offline batches through the engine in this process, as vLLM's `LLM` runs them.

    llm = LLM()                                    # the built-in model; or LLM("path/to/hf-folder", ...)
    outputs = llm.generate(prompts, SamplingParams(max_tokens=32))
    outputs = llm.chat([{"role": "user", "content": "Hi"}])
    for partial in llm.generate_stream(prompts):   # the outputs so far, after every step
        ...

The prompts of one call run together, continuously batched (at most `max_num_seqs` at a time); results come
back in prompt order. Sampling fields left out take the model's `generation_config.json` as `switchyard
generate` does (router/llm_params.py), so that the same prompts and parameters give the same tokens as that
command. No Ray: the Ray Data batch processor (cluster/batch_inference.py) holds one `LLM` per actor.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Union

from switchyard.configs.defaults import resolve_model
from switchyard.configs.engine import DType, EngineConfig, ExpertKernel, parse_bytes
from switchyard.configs.model import ConfigError
from switchyard.router.engine import Engine
from switchyard.router.generation_config import load_sampling_defaults
from switchyard.router.llm_outputs import (CompletionOutput, RequestOutput, completion_output,
                                           prompt_logprob_dicts)
from switchyard.router.llm_params import FALLBACK_DEFAULTS, INT64, SamplingParams
from switchyard.router.logprobs import TokenLogprob
from switchyard.router.sequence import RequestOutput as StepOutput
from switchyard.router.sequence import Sequence
from switchyard.router.tokenizer import Tokenizer

# A prompt: its text, or vLLM's dict forms {"prompt": text} and {"prompt_token_ids": [ids]}.
Prompt = Union[str, dict]
Messages = list[dict]  # one conversation: [{"role": ..., "content": ...}, ...]


class LLM:
    def __init__(self, model: str | Path | None = None, *, dtype: DType | None = None,
                 max_model_len: int | None = None, max_num_seqs: int | None = None,
                 max_num_batched_tokens: int | None = None, device: str | None = None, block_size: int | None = None,
                 kv_cache_memory_bytes: int | str | None = None, gpu_memory_utilization: float | None = None,
                 expert_kernel: ExpertKernel | None = None, num_threads: int | None = None, seed: int | None = None,
                 engine_config: EngineConfig | None = None):
        """`model`: a Hugging Face folder (default: the built-in model). The engine fields are vLLM's names
        (`kv_cache_memory_bytes` also takes "4GiB"); those left out (None) are `engine_config`'s, else
        EngineConfig's defaults, which are `switchyard generate`'s. `seed`: requests without a seed of their
        own sample from seeds drawn from this one, so that a whole run repeats."""
        try:
            self.model_path = resolve_model(None if model is None else str(model))
        except SystemExit as err:  # the CLI's message, as an exception a caller can catch
            raise ConfigError(str(err)) from None
        fields = dict(dtype=dtype, max_model_len=max_model_len, max_num_seqs=max_num_seqs,
                      max_num_batched_tokens=max_num_batched_tokens, device=device, block_size=block_size,
                      kv_cache_memory=parse_bytes(kv_cache_memory_bytes),
                      gpu_memory_utilization=gpu_memory_utilization, expert_kernel=expert_kernel,
                      num_threads=num_threads)
        config = dataclasses.replace(engine_config or EngineConfig(),
                                     **{k: v for k, v in fields.items() if v is not None})
        self.sampling_defaults = load_sampling_defaults(self.model_path)  # a bad file fails here, naming it
        self.engine = Engine.from_pretrained(self.model_path, config)
        self._seeds = None if seed is None else random.Random(seed)
        self._request_ids = itertools.count()

    # -- what vLLM's LLM also offers -------------------------------------------------------------------------
    def get_tokenizer(self) -> Tokenizer:
        if self.engine.tokenizer is None:
            raise ValueError(f"{self.model_path} has no tokenizer.json; give prompts as "
                             "{'prompt_token_ids': [...]}")
        return self.engine.tokenizer

    def get_default_sampling_params(self) -> SamplingParams:
        """The sampling a request that sets nothing gets: the model's generation_config.json."""
        return SamplingParams(**{**FALLBACK_DEFAULTS, **self.sampling_defaults})

    # -- generation ----------------------------------------------------------------------------------------
    def generate(self, prompts: Prompt | Iterable[Prompt],
                 sampling_params: SamplingParams | list[SamplingParams] | None = None) -> list[RequestOutput]:
        """Every prompt to completion; one RequestOutput per prompt, in prompt order. `sampling_params`: one
        for all, or one per prompt; None = the model's defaults."""
        requests = self._submit(prompts, sampling_params)
        for _ in self._run(requests):
            pass
        return [r.output(self._decode_token) for r in requests]

    def generate_stream(self, prompts: Prompt | Iterable[Prompt],
                        sampling_params: SamplingParams | list[SamplingParams] | None = None
                        ) -> Iterator[RequestOutput]:
        """As `generate`, but after every engine step a RequestOutput for each prompt that advanced: its text
        and tokens so far (cumulative, as vLLM's default output kind), `finished` on its last. Text that may
        still become a stop string is held back until it cannot. Leaving the loop early aborts what is left."""
        requests = self._submit(prompts, sampling_params)
        for changed in self._run(requests):
            for request in changed:
                yield request.output(self._decode_token)

    def chat(self, messages: Messages | list[Messages],
             sampling_params: SamplingParams | list[SamplingParams] | None = None,
             add_generation_prompt: bool = True) -> list[RequestOutput]:
        """One conversation, or a list of them, through the model's chat template (as the OpenAI API's
        /v1/chat/completions and `switchyard generate --chat`); one RequestOutput per conversation."""
        return self.generate(self._chat_prompts(messages, add_generation_prompt), sampling_params)

    def chat_stream(self, messages: Messages | list[Messages],
                    sampling_params: SamplingParams | list[SamplingParams] | None = None,
                    add_generation_prompt: bool = True) -> Iterator[RequestOutput]:
        return self.generate_stream(self._chat_prompts(messages, add_generation_prompt), sampling_params)

    def _chat_prompts(self, messages: Messages | list[Messages], add_generation_prompt: bool) -> list[str]:
        conversations = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        tokenizer = self.get_tokenizer()
        return [tokenizer.apply_chat_template(list(c), add_generation_prompt) for c in conversations]

    # -- requests in, outputs out -----------------------------------------------------------------------------
    def _submit(self, prompts, sampling_params) -> list["_Request"]:
        """Every prompt's sequences, validated before any enters the engine: a bad prompt or parameter raises
        (InvalidParameter, a ValueError naming it) and nothing of the call runs."""
        prompts = [prompts] if isinstance(prompts, (str, dict)) else list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            per_prompt = [sampling_params] * len(prompts)
        else:
            per_prompt = list(sampling_params)
            if len(per_prompt) != len(prompts):
                raise ValueError(f"{len(per_prompt)} sampling_params for {len(prompts)} prompts: give one, or "
                                 "one per prompt")
        requests = []
        for prompt, params in zip(prompts, per_prompt):
            text, given = _prompt_input(prompt)
            if params.seed is None and self._seeds is not None:
                params = dataclasses.replace(params, seed=self._seeds.randrange(-INT64, INT64))
            request_id = str(next(self._request_ids))
            seqs = []
            for j, engine_params in enumerate(params.per_completion(self.sampling_defaults)):
                # tokenised once: the other completions take the first one's ids
                seqs.append(self.engine.make_sequence(seqs[0].prompt_ids if seqs else given, engine_params,
                                                      f"{request_id}-{j}"))
            requests.append(_Request(request_id, text, seqs))
        return requests

    def _run(self, requests: list["_Request"]) -> Iterator[list["_Request"]]:
        """Step the engine until every sequence of `requests` has finished; after each step, the requests it
        advanced. However this ends (done, an error, the caller leaving a stream), none is left in the engine."""
        owner = {seq.request_id: (request, j) for request in requests for j, seq in enumerate(request.seqs)}
        for request in requests:
            for seq in request.seqs:
                self.engine.enqueue(seq)
        left = len(owner)
        try:
            while left:
                try:
                    outputs = self.engine.step()
                except Exception as err:
                    self.engine.fail_step(f"the engine step failed: {err!r}")  # frees that step's sequences
                    raise
                if not outputs and not self.engine.has_unfinished():
                    raise RuntimeError(f"the engine stopped with {left} sequences unfinished")
                changed: dict[str, _Request] = {}
                for out in outputs:
                    request, j = owner[out.request_id]
                    request.advance(j, out)
                    left -= out.finished
                    changed[request.request_id] = request
                yield list(changed.values())
        finally:
            for request in requests:
                for seq in request.seqs:
                    self.engine.abort(seq.request_id)  # a no-op for a finished one

    def _decode_token(self, token_id: int) -> str | None:
        tokenizer = self.engine.tokenizer
        return None if tokenizer is None else tokenizer.decode([token_id], skip_special_tokens=False)


def _prompt_input(prompt: Prompt) -> tuple[str | None, str | list[int]]:
    """(the prompt's text, or None for token ids; what the engine takes)."""
    if isinstance(prompt, str):
        return prompt, prompt
    if isinstance(prompt, dict) and "prompt_token_ids" in prompt:
        return None, [int(t) for t in prompt["prompt_token_ids"]]
    if isinstance(prompt, dict) and isinstance(prompt.get("prompt"), str):
        return prompt["prompt"], prompt["prompt"]
    raise TypeError(f"a prompt is a string, {{'prompt': str}} or {{'prompt_token_ids': [int, ...]}}; "
                    f"got {type(prompt).__name__}")


@dataclass
class _Request:
    """One prompt's n completions as the engine's steps advance them."""

    request_id: str
    prompt: str | None
    seqs: list[Sequence]
    texts: list[str] = field(default_factory=list)  # each completion's text as far as it is safe to show
    last: list[StepOutput | None] = field(default_factory=list)  # each completion's latest step output
    logprobs: list[list[TokenLogprob]] = field(default_factory=list)
    prompt_logprobs: tuple[TokenLogprob | None, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.seqs)
        self.texts, self.last, self.logprobs = [""] * n, [None] * n, [[] for _ in range(n)]

    def advance(self, j: int, out: StepOutput) -> None:
        self.texts[j] += out.delta_text
        self.last[j] = out
        self.logprobs[j].extend(out.logprobs)
        if out.prompt_logprobs is not None and self.prompt_logprobs is None:
            self.prompt_logprobs = out.prompt_logprobs

    def output(self, decode) -> RequestOutput:
        completions: list[CompletionOutput] = []
        for j, (seq, last) in enumerate(zip(self.seqs, self.last)):
            asked = seq.params.logprobs is not None
            completions.append(completion_output(
                j, self.texts[j], last.token_ids if last else (), self.logprobs[j] if asked else None,
                last.finish_reason if last else None, decode))
        return RequestOutput(self.request_id, self.prompt, list(self.seqs[0].prompt_ids),
                             prompt_logprob_dicts(self.prompt_logprobs, decode), completions,
                             finished=all(c.finish_reason is not None for c in completions))
