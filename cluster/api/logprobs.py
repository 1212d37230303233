"""Logprobs in the two shapes of the OpenAI API (vLLM returns the same):

- completions: `{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`, one entry per token; with `echo`,
  the prompt's tokens come first, the very first with `null` logprob (nothing comes before it); each
  `top_logprobs` entry maps the `logprobs` most likely tokens, and the chosen one, to their logprobs;
- chat: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}`.

A logprob of -inf (a token the model rules out) is sent as -9999.0, as vLLM does: JSON has no infinity.
"""

from __future__ import annotations

import math
from typing import Callable

from switchyard.router.logprobs import TokenLogprob

Decode = Callable[[int], str]
FLOOR = -9999.0


def token_decoder(tokenizer) -> Decode:
    """The text of one token; without a tokenizer, `token_id:N` (vLLM's `return_tokens_as_token_ids`)."""
    if tokenizer is None:
        return lambda token: f"token_id:{token}"
    return lambda token: tokenizer.decode([token], skip_special_tokens=False)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else FLOOR


def completion_logprobs(decode: Decode, tokens: list[tuple[int, TokenLogprob | None]], offset: int) -> dict:
    """`tokens`: (token id, its logprobs or None) in text order; `offset`: where the first token's text starts in
    the choice's text."""
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for token, entry in tokens:
        text = decode(token)
        out["tokens"].append(text)
        out["text_offset"].append(offset)
        offset += len(text)
        if entry is None:
            out["token_logprobs"].append(None)
            out["top_logprobs"].append(None)
            continue
        out["token_logprobs"].append(_finite(entry.logprob))
        top: dict[str, float] = {}
        for t, lp in entry.top:  # two tokens may share a text (bytes of one character): keep the likelier
            top.setdefault(decode(t), _finite(lp))
        top.setdefault(text, _finite(entry.logprob))
        out["top_logprobs"].append(top)
    return out


def text_length(logprobs: dict) -> int:
    """Characters the tokens of a completions logprobs object cover (for the next chunk's `text_offset`)."""
    return sum(len(t) for t in logprobs["tokens"])


def chat_logprobs(decode: Decode, entries: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> dict:
    def one(token: int, logprob: float) -> dict:
        text = decode(token)
        return {"token": text, "logprob": _finite(logprob), "bytes": list(text.encode("utf-8"))}

    return {"content": [{**one(e.token_id, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]}
                        for e in entries], "refusal": None}
