"""What the Python API returns: `RequestOutput` and `CompletionOutput`, shaped as vLLM's (`vllm.outputs`).

One RequestOutput per prompt; its `outputs` hold the prompt's n completions. Logprobs are vLLM's shape: per
token a dict {token_id: Logprob}, holding the chosen token and the requested number of most likely ones.

Differences from vLLM, where Switchyard's engine does otherwise:
- `token_ids` leave out the token that stopped a completion (an EOS or one of `stop_token_ids`), as the
  engine, `switchyard generate` and the OpenAI API do; vLLM keeps it;
- there is no `stop_reason`, `metrics` or `lora_request`;
- a chosen token outside the requested top alternatives has `rank=None` (the engine does not rank it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from switchyard.router.logprobs import TokenLogprob

Decode = Callable[[int], str]  # token id -> its text


@dataclass(frozen=True)
class Logprob:
    logprob: float
    rank: int | None = None  # 1 = the most likely token
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None  # sum of the chosen tokens' logprobs; None unless `logprobs` was asked
    logprobs: list[dict[int, Logprob]] | None  # one dict per token of `token_ids`; None unless asked
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error"; None while running

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None  # None when the prompt was given as token ids
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None  # the first is None: nothing comes before it
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = False


def logprob_dict(entry: TokenLogprob, decode: Decode) -> dict[int, Logprob]:
    """One token's logprobs as vLLM gives them: the top alternatives ranked 1, 2, ..., and the chosen token
    (ranked where it is among them, else unranked)."""
    scored = {token: Logprob(value, rank, decode(token)) for rank, (token, value) in enumerate(entry.top, 1)}
    if entry.token_id not in scored:
        scored = {entry.token_id: Logprob(entry.logprob, None, decode(entry.token_id)), **scored}
    return scored


def completion_output(index: int, text: str, token_ids: tuple[int, ...], logprobs: list[TokenLogprob] | None,
                      finish_reason: str | None, decode: Decode) -> CompletionOutput:
    """`logprobs`: the chosen tokens' entries (as many as `token_ids`), or None when they were not asked."""
    if logprobs is None:
        return CompletionOutput(index, text, list(token_ids), None, None, finish_reason)
    return CompletionOutput(index, text, list(token_ids), sum(lp.logprob for lp in logprobs),
                            [logprob_dict(lp, decode) for lp in logprobs], finish_reason)


def prompt_logprob_dicts(entries: tuple[TokenLogprob | None, ...] | None,
                         decode: Decode) -> list[dict[int, Logprob] | None] | None:
    if entries is None:
        return None
    return [None if e is None else logprob_dict(e, decode) for e in entries]
