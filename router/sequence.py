"""One request's life in the engine: its tokens, its blocks of the KV cache, its text and why it finished."""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass, field

import torch

from switchyard.router.detokenizer import IncrementalDetokenizer
from switchyard.router.logprobs import TokenLogprob
from switchyard.router.sampling import SamplingParams

_numbers = itertools.count()


@dataclass(eq=False)  # identity: the scheduler looks sequences up in its lists
class Sequence:
    prompt_ids: list[int]
    params: SamplingParams
    number: int = field(default_factory=lambda: next(_numbers))  # numeric id, e.g. a trace's seq_id
    request_id: str = ""
    output_ids: list[int] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)  # its KV-cache blocks, in position order (block table)
    num_cached: int = 0  # tokens whose keys and values are in the cache
    num_preemptions: int = 0  # times its blocks were taken back and its cache recomputed
    text: str = ""  # detokenised output, cut at a stop string
    detokenizer: IncrementalDetokenizer = field(default_factory=IncrementalDetokenizer)
    emitted: int = 0  # characters of `text` already streamed
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error"
    error: str | None = None
    generator: torch.Generator | None = None
    arrival_time: float = field(default_factory=time.perf_counter)
    scheduled_time: float | None = None  # admitted to the running batch (the end of its queueing)
    first_token_time: float | None = None
    finish_time: float | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)  # one per output token, with params.logprobs
    prompt_logprobs: list[TokenLogprob | None] = field(default_factory=list)  # per prompt token (the first: None)
    emitted_logprobs: int = 0  # entries of `logprobs` already in an output
    emitted_prompt_logprobs: bool = False
    trace: object | None = None  # the request's span context when it is traced (cluster/observability/tracing.py)

    def __post_init__(self) -> None:
        self.request_id = self.request_id or f"req-{self.number}"
        if self.params.seed is not None:
            self.generator = torch.Generator().manual_seed(self.params.seed)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def total_len(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_uncached(self) -> int:
        """Tokens not yet in the cache: the rest of the prompt while prefilling, then the last sampled token."""
        return self.total_len - self.num_cached

    @property
    def decoding(self) -> bool:
        """All its tokens are in the cache but the last sampled one: it takes one token a step."""
        return self.num_uncached == 1 and self.prompt_done

    @property
    def prompt_done(self) -> bool:
        """The whole prompt is in the cache: the sequence decodes one token a step."""
        return self.num_cached >= len(self.prompt_ids)

    def pending_tokens(self, limit: int | None = None) -> list[int]:
        """The next `limit` (default: all) tokens not yet in the cache."""
        start, prompt = self.num_cached, len(self.prompt_ids)
        stop = self.total_len if limit is None else min(self.total_len, start + limit)
        if start >= prompt:  # decoding: only output tokens, no copy of the prompt
            return self.output_ids[start - prompt:stop - prompt]
        return (self.prompt_ids[start:] + self.output_ids)[:stop - start]


@dataclass(frozen=True)
class RequestOutput:
    request_id: str
    delta_text: str  # new text since the last output of this request
    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    finished: bool
    finish_reason: str | None = None
    error: str | None = None
    time_to_first_token: float | None = None
    latency: float | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # of the tokens added to `token_ids` since the last output
    prompt_logprobs: tuple[TokenLogprob | None, ...] | None = None  # once, in the first output


def merge_all(outputs: list[RequestOutput]) -> RequestOutput:
    """Consecutive outputs of one request as one, as merge_outputs folded over them but in linear time."""
    last = outputs[-1]
    return dataclasses.replace(last, delta_text="".join(o.delta_text for o in outputs),
                               logprobs=tuple(lp for o in outputs for lp in o.logprobs),
                               prompt_logprobs=next((o.prompt_logprobs for o in outputs if o.prompt_logprobs),
                                                    last.prompt_logprobs))


def merge_outputs(first: RequestOutput, then: RequestOutput) -> RequestOutput:
    """Two consecutive outputs of one request as one: the later state, with both deltas."""
    return dataclasses.replace(then, delta_text=first.delta_text + then.delta_text,
                               logprobs=first.logprobs + then.logprobs,
                               prompt_logprobs=first.prompt_logprobs or then.prompt_logprobs)
