"""Logprobs in the two shapes of the OpenAI API (vLLM returns the same):

- completions: `{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`, one entry per token; with `echo`,
  the prompt's tokens come first, the very first with `null` logprob (nothing comes before it); each
  `top_logprobs` entry maps the `logprobs` most likely tokens, and the chosen one, to their logprobs;
- chat: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}`.

A logprob of -inf (a token the model rules out) is sent as -9999.0, as vLLM does: JSON has no infinity.
"""

from __future__ import annotations

import codecs
import math

from switchyard.router.logprobs import TokenLogprob

FLOOR = -9999.0


class TokenText:
    """How a token is written in logprobs: its exact bytes (chat's `bytes`; joined, they are the UTF-8 text),
    and its text. A byte-level token may hold only part of a UTF-8 character, which has no text of its own: it
    is written `bytes:\\xe6\\x9d`, as OpenAI writes such tokens, so that two of them never share a text (a key
    of completions' `top_logprobs`). Without a tokenizer, a token is `token_id:N` (vLLM's
    `return_tokens_as_token_ids`) with no bytes."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def bytes(self, token: int) -> bytes | None:
        return None if self.tokenizer is None else self.tokenizer.token_bytes(token)

    def text(self, token: int) -> str:
        data = self.bytes(token)
        if data is None:
            return f"token_id:{token}"
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in data)


class TextOffsets:
    """Where each token starts in a choice's text, in characters, as tokens come (streamed: chunk after chunk).
    A token that starts inside a character (the rest of one begun by the token before) gets that character's
    offset; invalid bytes count as the one U+FFFD each run of them decodes to."""

    def __init__(self):
        self.chars = 0
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def advance(self, data: bytes) -> int:
        """The offset of a token with these bytes; the next one starts after them."""
        here = self.chars
        self.chars += len(self._utf8.decode(data))
        return here


def _finite(value: float) -> float:
    return value if math.isfinite(value) else FLOOR


def completion_logprobs(tokens: TokenText, entries: list[tuple[int, TokenLogprob | None]],
                        offsets: TextOffsets) -> dict:
    """`entries`: (token id, its logprobs or None) in text order; `offsets` continues from the tokens before."""
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for token, entry in entries:
        text = tokens.text(token)
        out["tokens"].append(text)
        out["text_offset"].append(offsets.advance(tokens.bytes(token) or b""))
        if entry is None:
            out["token_logprobs"].append(None)
            out["top_logprobs"].append(None)
            continue
        out["token_logprobs"].append(_finite(entry.logprob))
        top: dict[str, float] = {}
        for t, lp in entry.top:  # distinct tokens of the same text (rare once partial ones are bytes:): the likelier
            top.setdefault(tokens.text(t), _finite(lp))
        top.setdefault(text, _finite(entry.logprob))
        out["top_logprobs"].append(top)
    return out


def chat_logprobs(tokens: TokenText, entries: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> dict:
    def one(token: int, logprob: float) -> dict:
        data = tokens.bytes(token)
        return {"token": tokens.text(token), "logprob": _finite(logprob),
                "bytes": None if data is None else list(data)}

    return {"content": [{**one(e.token_id, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]}
                        for e in entries], "refusal": None}
