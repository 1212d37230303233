"""The request bodies of the OpenAI API, and their parsing: every body that cannot run is an `ApiError` (a 4xx
with an OpenAI error object) before it reaches the engine.

Types are strict (`"max_tokens": "3"` or `true` is a 400, as in OpenAI's API, not a silent cast). A parameter
this server does not implement is a 400 naming it, never silently ignored; the few that OpenAI clients send
with a neutral value (`logit_bias: {}`, `best_of: 1`, `response_format: {"type": "text"}`, `tools: []`, ...)
are accepted with that value only.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from switchyard.cluster.api.nullable import CHAT_MESSAGE_NULLABLE, CHAT_NULLABLE, COMPLETION_NULLABLE, unset_nulls

# Bounds of the numbers OpenAI and vLLM take: a seed is an int64, top_k past any vocabulary means "off".
INT64 = 2**63
MAX_TOP_K = 2**31 - 1
MAX_LOGPROBS = 20  # top alternatives per token, as vLLM's default `max_logprobs`


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Body):
    include_usage: bool = False
    include_obfuscation: bool = False  # OpenAI's padding of chunks against side channels: not sent here
    continuous_usage_stats: bool = False  # vLLM's: usage in every chunk

    @model_validator(mode="after")
    def _unsupported(self):
        if self.continuous_usage_stats:
            raise ValueError("continuous_usage_stats is not supported; use include_usage")
        if self.include_obfuscation:
            raise ValueError("include_obfuscation is not supported; leave it out")
        return self


# Parameters OpenAI clients send that this server does not implement: accepted only with the value that means
# "not used" (what each maps to is that value, or a check on it).
NEUTRAL: dict[str, Any] = {
    "logit_bias": lambda v: not v,
    "suffix": lambda v: v is None or v == "",
    "response_format": lambda v: v is None or v == {"type": "text"},
    "tools": lambda v: not v,
    "tool_choice": lambda v: v in (None, "none", "auto"),
    "functions": lambda v: not v,
    "function_call": lambda v: v in (None, "none", "auto"),
    "parallel_tool_calls": lambda v: True,  # without tools, there is nothing to call in parallel
    "user": lambda v: True,  # an end-user id for abuse monitoring: nothing to do with it here
    "store": lambda v: not v,
    "metadata": lambda v: not v,
    "service_tier": lambda v: v in (None, "auto", "default"),
    "reasoning_effort": lambda v: v is None,
    "modalities": lambda v: v in (None, ["text"]),
    "prediction": lambda v: v is None,
    "audio": lambda v: v is None,
    "web_search_options": lambda v: v is None,
    "safety_identifier": lambda v: True,  # as `user`
    "prompt_cache_key": lambda v: True,  # a hint for routing to a cache: a single router has one cache
}


class CommonRequest(_Body):
    # extra="allow" only to check the neutral parameters above; anything else is refused in `_check_extra`
    model_config = ConfigDict(extra="allow", strict=True)

    model: str
    # None = left out: the model's generation_config.json decides, else OpenAI's default
    temperature: float | None = None
    top_p: float | None = None
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    top_k: int | None = Field(None, ge=-1, le=MAX_TOP_K)  # not OpenAI's, but vLLM's; -1 and 0 are both "off"
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None  # vLLM's
    ignore_eos: bool = False  # vLLM's
    best_of: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_unset(cls, data):
        return unset_nulls(data, CHAT_NULLABLE if issubclass(cls, ChatRequest) else COMPLETION_NULLABLE)

    @model_validator(mode="after")
    def _check_extra(self):
        for name, value in (self.model_extra or {}).items():
            accepts = NEUTRAL.get(name)
            if accepts is None:
                raise UnsupportedParameter(name, f"`{name}` is not a parameter this server supports")
            if not accepts(value):
                raise UnsupportedParameter(name, f"`{name}` is not supported by this server (got {value!r}); "
                                                 "leave it out")
        if self.best_of is not None and self.best_of != self.n:
            raise UnsupportedParameter("best_of", "best_of other than n is not supported; leave it out")
        if self.stream_options is not None and not self.stream:
            raise UnsupportedParameter("stream_options", "stream_options needs stream: true")
        return self


class CompletionRequest(CommonRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int = Field(16, ge=0, lt=INT64)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)

    @model_validator(mode="after")
    def _prompts(self):
        if isinstance(self.prompt, list) and not self.prompt:
            raise UnsupportedParameter("prompt", "the prompt list is empty")
        if self.max_tokens == 0 and not self.echo:
            raise UnsupportedParameter("max_tokens", "max_tokens must be >= 1 (0 only with echo, to score the "
                                                     "prompt)")
        return self

    def prompts(self) -> list[str | list[int]]:
        """One request may carry several prompts: a list of strings, or a list of token-id lists."""
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]
        return list(p)


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None  # accepted: what a chat template does with it is the template's

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_unset(cls, data):  # an assistant message given back as the API returned it: `refusal: null`
        return unset_nulls(data, CHAT_MESSAGE_NULLABLE)

    def text(self, index: int) -> str:
        if not isinstance(self.content, list):
            return self.content or ""
        parts = []
        for j, part in enumerate(self.content):  # content parts: only text is understood
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"content parts of type {part.get('type')!r} are not supported; send text",
                               f"messages.{index}.content.{j}")
            parts.append(part["text"])
        return "".join(parts)


class ChatRequest(CommonRequest):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1, lt=INT64)
    max_completion_tokens: int | None = Field(None, ge=1, lt=INT64)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)

    @model_validator(mode="after")
    def _top_logprobs(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise UnsupportedParameter("top_logprobs", "top_logprobs needs logprobs: true")
        return self


class UnsupportedParameter(ValueError):
    """Raised inside a validator: becomes a 400 naming `param` (pydantic would name the model instead)."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


# -- parsing ----------------------------------------------------------------------------------------------
def parse_body(raw: bytes, model: type[BaseModel]):
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as err:  # also UnicodeDecodeError, and ints past Python's digit limit
        raise ApiError(400, f"the request body is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    where = lone_surrogate(data)
    if where is not None:
        raise ApiError(400, "the request holds a lone UTF-16 surrogate (such as \\ud800), which is not valid "
                            "Unicode text; send well-formed UTF-8", where or None)
    try:
        return model.model_validate(data)
    except UnsupportedParameter as err:
        raise ApiError(400, str(err), err.param) from err
    except ValidationError as err:
        raise validation_error(err.errors()) from err


def lone_surrogate(value, path: str = "") -> str | None:
    """The dotted path of the first string (or key) in `value` that cannot be encoded as UTF-8, else None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        here = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and lone_surrogate(key) is not None:
            return path
        found = lone_surrogate(item, here)
        if found is not None:
            return found
    return None


_TYPE_NAMES = {"str", "int", "float", "bool", "dict", "list", "none"}


def validation_error(errors: list[dict]) -> ApiError:
    first = errors[0] if errors else {}
    ctx = first.get("ctx") or {}
    if isinstance(ctx.get("error"), UnsupportedParameter):  # raised in a nested model's validator
        return ApiError(400, str(ctx["error"]), ctx["error"].param)
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    # a union (prompt: str | list[...]) reports each member as a step of the path: keep the field's own path
    loc = [p for p in loc if not any(c in p for c in "[]|") and p not in _TYPE_NAMES]
    param = ".".join(loc) or None
    if param is None:
        return ApiError(400, "invalid request")
    message = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        message = "not a parameter this server supports"
    return ApiError(400, f"{param}: {message}", param)
