"""The tokenizer of a Hugging Face model folder (`tokenizer.json`, `tokenizer_config.json`), with its chat
template, without depending on transformers."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as _HFTokenizer


def _token_text(value) -> str | None:
    if isinstance(value, dict):  # AddedToken serialised as a dict
        return value.get("content")
    return value


@dataclass
class Tokenizer:
    backend: _HFTokenizer
    bos_token: str | None = None
    eos_token: str | None = None
    add_bos_token: bool = False
    chat_template: str | None = None

    @classmethod
    def from_dir(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        file = path / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(f"{path}: no tokenizer.json; Switchyard needs a fast (tokenizers) tokenizer")
        settings = {}
        if (path / "tokenizer_config.json").is_file():
            settings = json.loads((path / "tokenizer_config.json").read_text())
        template = settings.get("chat_template")
        if template is None and (path / "chat_template.jinja").is_file():
            template = (path / "chat_template.jinja").read_text()
        return cls(_HFTokenizer.from_file(str(file)), _token_text(settings.get("bos_token")),
                   _token_text(settings.get("eos_token")), bool(settings.get("add_bos_token", False)), template)

    @classmethod
    def from_dir_if_present(cls, path: str | Path) -> "Tokenizer | None":
        """The folder's tokenizer, or None for a model served by token ids only."""
        return cls.from_dir(path) if (Path(path) / "tokenizer.json").is_file() else None

    @property
    def eos_token_id(self) -> int | None:
        return None if self.eos_token is None else self.backend.token_to_id(self.eos_token)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.backend.encode(text, add_special_tokens=add_special_tokens).ids
        if add_special_tokens and self.add_bos_token and self.bos_token is not None:
            bos = self.backend.token_to_id(self.bos_token)
            if bos is not None and (not ids or ids[0] != bos):
                ids = [bos, *ids]
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_bytes(self, token: int) -> bytes:
        """The exact bytes one token adds to the text. A byte-level BPE token may hold part of a UTF-8 character,
        which `decode([token])` turns into U+FFFD; its bytes are read from the vocabulary instead."""
        added = self._added_tokens.get(token)
        if added is not None:  # added tokens are stored as their text, not byte-mapped
            return added.encode("utf-8")
        piece = self.backend.id_to_token(token)
        if self._byte_level and piece is not None:
            return bytes(_UNICODE_TO_BYTE[c] for c in piece)
        if piece is not None and _BYTE_FALLBACK.fullmatch(piece):  # sentencepiece's <0xNN>
            return bytes([int(piece[3:5], 16)])
        return self.decode([token], skip_special_tokens=False).encode("utf-8")

    @functools.cached_property
    def _added_tokens(self) -> dict[int, str]:
        return {i: t.content for i, t in self.backend.get_added_tokens_decoder().items()}

    @functools.cached_property
    def _byte_level(self) -> bool:
        """Whether the decoder is byte-level (GPT-2's byte-to-unicode vocabulary), alone or in a sequence."""
        decoder = json.loads(self.backend.to_str()).get("decoder") or {}
        parts = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
        return any(d.get("type") == "ByteLevel" for d in parts)

    def _compiled_template(self):
        return _compile_template(self.chat_template)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise ValueError("this model has no chat template; use /v1/completions or add `chat_template` to "
                             "tokenizer_config.json")
        return self._compiled_template().render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "", eos_token=self.eos_token or "")


@functools.lru_cache(maxsize=8)
def _compile_template(source: str):
    """Compiling a template costs milliseconds of the GIL: once per template, not once per request."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(source)


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's table (as in transformers and tokenizers): printable bytes stand for themselves, the others are
    shifted past 255 so that every byte has a visible character in the vocabulary."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shift = {b: chr(b) for b in kept}, 0
    for b in range(256):
        if b not in table:
            table[b], shift = chr(256 + shift), shift + 1
    return table


_UNICODE_TO_BYTE = {c: b for b, c in _byte_to_unicode().items()}
_BYTE_FALLBACK = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _raise(message: str):
    raise ValueError(message)
