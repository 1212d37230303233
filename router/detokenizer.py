"""Incremental detokenization: each step decodes a few tokens, not the whole output again.

Decoding token by token is not additive: a decoder may drop the leading space of the first token (sentencepiece's
`▁`), and one character may span several byte-level tokens. So, as vLLM does, each step decodes the same short
window twice, from a `prefix` a few tokens back: once up to `read` (the tokens already turned into text) and
once to the end. What the second adds to the first is the new text, exact because both start at the same token.
While that ends in an incomplete character (U+FFFD), nothing is emitted and the window grows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class IncrementalDetokenizer:
    prefix: int = 0  # first token of the window decoded each step
    read: int = 0  # tokens already turned into text

    def step(self, decode, ids: list[int], final: bool = False) -> str:
        """The new text that `ids` (all output tokens so far) add; `decode(ids) -> str`. With `final` (the end of
        the output), an unfinished character too, as a full decode gives it."""
        before = decode(ids[self.prefix:self.read])
        after = decode(ids[self.prefix:])
        if not final and (after.endswith("\ufffd") or len(after) < len(before)):
            return ""  # a character not finished yet: wait for its next byte
        self.prefix, self.read = (len(ids), len(ids)) if final else (self.read, len(ids))
        return after[len(before):]
