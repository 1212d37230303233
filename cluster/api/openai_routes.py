"""OpenAI-compatible HTTP API: /v1/completions, /v1/chat/completions, /v1/models, /health.

Plain FastAPI with no Ray in it: the router deployment mounts it with `serve.ingress`, and tests run it
in-process. Errors are OpenAI error objects: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from switchyard.cluster.api.requests import (ApiError, ChatRequest, CompletionRequest, CommonRequest, parse_body,
                                                 validation_error)
from switchyard.cluster.api.keys import ApiKeyAuth
from switchyard.cluster.api.choices import close, make_job, respond, start, stream
from switchyard.cluster.observability import tracing
from switchyard.router.async_engine import AsyncEngine

log = logging.getLogger(__name__)


@dataclass
class ServedModel:
    """What the API needs from the server behind it."""

    name: str
    engine: AsyncEngine
    max_model_len: int
    created: int = 0
    max_waiting_requests: int | None = None  # past max_num_seqs running and this many waiting: 429
    max_request_bytes: int | None = None  # a larger body: 413
    # the model's generation_config.json, for requests that leave sampling fields out
    sampling_defaults: dict = field(default_factory=dict)
    telemetry: Any = None  # on_request(operation, model, seconds, output, error_type): RouterTelemetry

    @property
    def max_unfinished(self) -> int | None:
        if self.max_waiting_requests is None:
            return None
        return self.engine.engine.config.max_num_seqs + self.max_waiting_requests

    def health(self) -> dict:
        """ok, or a 503 while the engine cannot serve (it failed, or a step is stuck): a probe then restarts it."""
        problem = self.engine.problem()
        if problem is not None:
            raise ApiError(503, problem, kind="server_error", code="unhealthy")
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
        if self.telemetry is not None:
            self.telemetry.on_request(self.operation, self.model, time.perf_counter() - self.start, output,
                                      tracing.error_type(error, output))
        tracing.end_request(self.span, output, seq, request_id, self.model if output is not None else None, error)


# -- the app ----------------------------------------------------------------------------------------------
def build_openai_app(title: str = "Switchyard") -> FastAPI:
    app = FastAPI(title=title)
    app.state.api_keys = ()  # set by the server (cluster/api/keys.py); empty: no key needed
    app.add_middleware(ApiKeyAuth)

    @app.exception_handler(ApiError)
    async def _api_error(_request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request, err: RequestValidationError):
        return JSONResponse(validation_error(err.errors()).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, err: StarletteHTTPException):
        return JSONResponse(ApiError(err.status_code, str(err.detail)).body(), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_request, err: Exception):  # a bug: still an OpenAI error object, never plain text
        log.exception("unhandled error in a request")
        return JSONResponse(ApiError(500, f"internal error: {type(err).__name__}", kind="server_error").body(),
                            status_code=500)

    @app.get("/health")
    async def health(request: Request):
        return _served(request).health()

    @app.get("/v1/models")
    async def models(request: Request):
        served = _served(request)
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": served.created,
                                            "owned_by": "switchyard", "max_model_len": served.max_model_len}]}

    @app.post("/v1/completions", openapi_extra=_body_schema(CompletionRequest))
    async def completions(request: Request):
        watch = _Watch(request, "text_completion")
        try:
            served = _served(request)
            body = await _parse(request, CompletionRequest)
            return await _respond(served, body, body.prompts(), watch)
        except BaseException as err:
            watch.close(error=err)
            raise

    @app.post("/v1/chat/completions", openapi_extra=_body_schema(ChatRequest))
    async def chat(request: Request):
        watch = _Watch(request, "chat")
        try:
            served = _served(request)
            body = await _parse(request, ChatRequest)
            tokenizer = served.engine.engine.tokenizer
            if tokenizer is None:
                raise ApiError(400, "this model has no tokenizer, so no chat template; use /v1/completions with "
                                    "token ids", "messages")
            messages = [{"role": m.role, "content": m.text(i), **({"name": m.name} if m.name else {})}
                        for i, m in enumerate(body.messages)]
            try:
                prompt = tokenizer.apply_chat_template(messages)
            except Exception as err:
                raise ApiError(400, f"cannot apply the chat template: {err}", "messages") from err
            return await _respond(served, body, [prompt], watch)
        except BaseException as err:
            watch.close(error=err)
            raise

    openapi = app.openapi

    def schema_with_bodies() -> dict:  # the bodies' models are parsed by hand (parse_body): add them to the schema
        schema = openapi()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (CompletionRequest, ChatRequest):
            components.update(model.model_json_schema(ref_template=REF).pop("$defs", {}))
        return schema

    app.openapi = schema_with_bodies
    return app


REF = "#/components/schemas/{model}"


def _body_schema(model: type[BaseModel]) -> dict:
    schema = model.model_json_schema(ref_template=REF)
    schema.pop("$defs", None)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _served(request: Request) -> ServedModel:
    served = getattr(request.app.state, "served", None)
    if served is None:
        raise ApiError(503, "the model is still loading", kind="server_error")
    return served


async def _parse(request: Request, model: type[BaseModel]):
    return parse_body(await _read_body(request, _served(request).max_request_bytes), model)


async def _read_body(request: Request, limit: int | None) -> bytes:
    """The body, refused with a 413 as soon as it passes `limit` bytes (declared or not): a huge body is never
    held in memory whole."""
    if limit is None:
        return await request.body()
    too_large = ApiError(413, f"the request body is larger than this server's limit of {limit} bytes",
                         code="request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _respond(served: ServedModel, body: CommonRequest, prompts: list[str | list[int]], watch: _Watch):
    if body.model != served.name:
        raise ApiError(404, f"The model `{body.model}` does not exist; this server serves `{served.name}`",
                       "model", "model_not_found")
    job = make_job(served.engine, served.max_model_len, served.name, body, prompts, int(time.time()),
                   served.sampling_defaults)
    first = job.choices[0]  # the span and request metrics describe the first choice (n > 1: one of several)
    requested = (body.max_completion_tokens or body.max_tokens) if job.chat else body.max_tokens
    tracing.request_attributes(watch.span, body.model, requested, first.seq.params.temperature,
                               first.seq.params.top_p)
    for choice in job.choices:
        tracing.follow(watch.span, choice.seq)
    start(served.engine, job, served.max_unfinished)
    if body.stream:
        return _JobStream(job, watch)
    try:
        response = await respond(job)
    finally:
        close(job)
    watch.close(first.final, first.seq, job.request_id)
    return response


class _JobStream(StreamingResponse):
    """A streamed job that ends, whatever happens to the connection, with its sequences aborted and its span and
    request metrics closed. Starlette cancels the body iterator when the client goes away and never closes it,
    so a `finally` inside the generator would wait for the garbage collector, or never run if the stream had
    not started."""

    def __init__(self, job, watch: _Watch):
        super().__init__(stream(job), media_type="text/event-stream")
        self.job, self.watch = job, watch

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.body_iterator.aclose()
            except RuntimeError:  # still running in a task being cancelled: that task ends it
                pass
            close(self.job)
            first = self.job.choices[0]
            self.watch.close(first.final, first.seq, self.job.request_id)
