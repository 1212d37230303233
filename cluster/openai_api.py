"""OpenAI-compatible HTTP API: /v1/completions, /v1/chat/completions, /v1/models, /health.

Plain FastAPI with no Ray in it: the router deployment mounts it with `serve.ingress`, and tests run it
in-process. Errors are OpenAI error objects: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from switchyard.cluster import tracing
from switchyard.router.async_engine import AsyncEngine
from switchyard.router.sampling import InvalidParameter, SamplingParams


@dataclass
class ServedModel:
    """What the API needs from the server behind it."""

    name: str
    engine: AsyncEngine
    max_model_len: int
    created: int = 0
    telemetry: Any = None  # on_request(operation, model, seconds, output, error_type): RouterTelemetry


    def health(self) -> dict:
        return {"status": "ok", "model": self.name}


class _Watch:
    """One API request's span and request metrics, closed exactly once (off: the span is None)."""

    def __init__(self, request: Request, operation: str):
        self.operation, self.start = operation, time.perf_counter()
        self.span = tracing.start_request(request.headers, operation)
        served = getattr(request.app.state, "served", None)
        self.telemetry = served.telemetry if served is not None else None
        self.model = served.name if served is not None else ""
        self.closed = False

    def close(self, output=None, seq=None, request_id: str | None = None, error: BaseException | None = None):
        if self.closed:
            return
        self.closed = True
        error_type = None
        if error is not None:
            error_type = getattr(error, "code", None) or getattr(error, "kind", None) or type(error).__name__
        if self.telemetry is not None:
            self.telemetry.on_request(self.operation, self.model, time.perf_counter() - self.start, output,
                                      error_type)
        tracing.end_request(self.span, output, seq, request_id, self.model if output is not None else None, error)


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# -- request bodies ---------------------------------------------------------------------------------------
class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    top_k: int = 0  # not OpenAI's, but vLLM's; accepted the same way
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


class CompletionRequest(_Common):
    prompt: str | list[int] | list[str]
    max_tokens: int | None = 16


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: only text is understood
            return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")
        return self.content or ""


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


# -- the app ----------------------------------------------------------------------------------------------
def build_openai_app(title: str = "Switchyard") -> FastAPI:
    app = FastAPI(title=title)

    @app.exception_handler(ApiError)
    async def _api_error(_request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request, err: RequestValidationError):
        return JSONResponse(_validation_error(err.errors()).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, err: StarletteHTTPException):
        return JSONResponse(ApiError(err.status_code, str(err.detail)).body(), status_code=err.status_code)

    @app.get("/health")
    async def health(request: Request):
        return _served(request).health()

    @app.get("/v1/models")
    async def models(request: Request):
        served = _served(request)
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": served.created,
                                            "owned_by": "switchyard", "max_model_len": served.max_model_len}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        watch = _Watch(request, "text_completion")
        try:
            served = _served(request)
            body = await _parse(request, CompletionRequest)
            prompt = body.prompt
            if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
                if len(prompt) != 1:
                    raise ApiError(400, "only one prompt per request is supported (n=1)", "prompt")
                prompt = prompt[0]
            return await _respond(served, body, prompt, chat=False, prompt_param="prompt", watch=watch)
        except BaseException as err:
            watch.close(error=err)
            raise

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        watch = _Watch(request, "chat")
        try:
            served = _served(request)
            body = await _parse(request, ChatRequest)
            tokenizer = served.engine.engine.tokenizer
            if tokenizer is None:
                raise ApiError(400, "this model has no tokenizer, so no chat template; use /v1/completions with "
                                    "token ids", "messages")
            try:
                prompt = tokenizer.apply_chat_template([{"role": m.role, "content": m.text()}
                                                        for m in body.messages])
            except Exception as err:
                raise ApiError(400, f"cannot apply the chat template: {err}", "messages") from err
            return await _respond(served, body, prompt, chat=True, prompt_param="messages", watch=watch)
        except BaseException as err:
            watch.close(error=err)
            raise

    return app


def _served(request: Request) -> ServedModel:
    served = getattr(request.app.state, "served", None)
    if served is None:
        raise ApiError(503, "the model is still loading", kind="server_error")
    return served


async def _parse(request: Request, model: type[BaseModel]):
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the request body is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise _validation_error(err.errors()) from err


def _validation_error(errors: list[dict]) -> ApiError:
    first = errors[0] if errors else {}
    param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    return ApiError(400, f"{param}: {first.get('msg', 'invalid request')}" if param else "invalid request", param)


def _sampling_params(body: _Common, max_tokens: int) -> SamplingParams:
    if body.n != 1:
        raise ApiError(400, "only n=1 is supported", "n")
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    try:
        return SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                              top_k=body.top_k, seed=body.seed, stop=stop, presence_penalty=body.presence_penalty,
                              frequency_penalty=body.frequency_penalty)
    except InvalidParameter as err:
        raise ApiError(400, str(err), err.param) from err


async def _respond(served: ServedModel, body, prompt, chat: bool, prompt_param: str, watch: _Watch):
    requested = (body.max_completion_tokens or body.max_tokens) if chat else body.max_tokens
    tracing.request_attributes(watch.span, body.model, requested, body.temperature, body.top_p)
    if body.model != served.name:
        raise ApiError(404, f"The model `{body.model}` does not exist; this server serves `{served.name}`",
                       "model", "model_not_found")
    engine = served.engine
    try:
        probe = engine.validate(prompt, SamplingParams(max_tokens=1))
    except InvalidParameter as err:
        code = "context_length_exceeded" if "context" in str(err) else None
        raise ApiError(400, str(err), prompt_param, code) from err
    prompt_tokens = len(probe.prompt_ids)
    room = served.max_model_len - prompt_tokens
    if requested is not None and requested > room:
        raise ApiError(400, f"This model's maximum context length is {served.max_model_len} tokens. However, you "
                            f"requested {prompt_tokens + requested} tokens ({prompt_tokens} in the {prompt_param}, "
                            f"{requested} in the completion).", "max_tokens", "context_length_exceeded")
    params = _sampling_params(body, requested if requested is not None else room)
    seq = engine.validate(probe.prompt_ids, params)
    request_id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    seq.request_id = request_id
    tracing.follow(watch.span, seq)
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(engine, seq, served.name, created, chat, include_usage, watch),
                                 media_type="text/event-stream")
    final = None
    async for output in engine.generate(seq):
        final = output
    if final.finish_reason == "error":
        raise ApiError(503, f"generation failed: {final.error}", kind="server_error")
    watch.close(final, seq, request_id)
    usage = _usage(final)
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": final.text}, "logprobs": None,
                  "finish_reason": final.finish_reason}
        return {"id": request_id, "object": "chat.completion", "created": created, "model": served.name,
                "choices": [choice], "usage": usage}
    choice = {"index": 0, "text": final.text, "logprobs": None, "finish_reason": final.finish_reason}
    return {"id": request_id, "object": "text_completion", "created": created, "model": served.name,
            "choices": [choice], "usage": usage}


def _usage(output) -> dict:
    completion = len(output.token_ids)
    return {"prompt_tokens": output.prompt_tokens, "completion_tokens": completion,
            "total_tokens": output.prompt_tokens + completion}


def _sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


async def _stream(engine: AsyncEngine, seq, model: str, created: int, chat: bool, include_usage: bool,
                  watch: _Watch):
    final = None
    try:
        async for event in _stream_events(engine, seq, model, created, chat, include_usage):
            if not isinstance(event, str):
                final = event
                continue
            yield event
    finally:  # also when the client goes away mid-stream
        watch.close(final, seq, seq.request_id)


async def _stream_events(engine: AsyncEngine, seq, model: str, created: int, chat: bool, include_usage: bool):
    """SSE lines, and before the last of them the final RequestOutput (for the request's span and metrics)."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta_text: str | None, finish_reason: str | None, first: bool = False) -> dict:
        if chat:
            delta = {"role": "assistant", "content": ""} if first else ({} if delta_text is None else
                                                                        {"content": delta_text})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": delta_text or "", "logprobs": None, "finish_reason": finish_reason}
        payload = {"id": seq.request_id, "object": kind, "created": created, "model": model, "choices": [choice]}
        if include_usage:
            payload["usage"] = None
        return payload

    if chat:
        yield _sse(chunk(None, None, first=True))
    final = None
    async for output in engine.generate(seq):
        final = output
        if output.finish_reason == "error":
            yield output
            yield _sse(ApiError(503, f"generation failed: {output.error}", kind="server_error").body())
            yield _sse("[DONE]")
            return
        if output.delta_text:
            yield _sse(chunk(output.delta_text, None))
        if output.finished:
            yield _sse(chunk(None, output.finish_reason))
    if include_usage and final is not None:
        yield _sse({"id": seq.request_id, "object": kind, "created": created, "model": model, "choices": [],
                    "usage": _usage(final)})
    if final is not None:
        yield final
    yield _sse("[DONE]")
