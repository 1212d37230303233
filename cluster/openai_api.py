"""OpenAI-compatible HTTP API: /v1/completions, /v1/chat/completions, /v1/models, /health.

Plain FastAPI with no Ray in it: the router deployment mounts it with `serve.ingress`, and tests run it
in-process. Errors are OpenAI error objects: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from switchyard.cluster.openai_requests import (ApiError, ChatRequest, CompletionRequest, CommonRequest, parse_body,
                                                 validation_error)
from switchyard.router.async_engine import AsyncEngine
from switchyard.router.sampling import InvalidParameter, SamplingParams

log = logging.getLogger(__name__)


@dataclass
class ServedModel:
    """What the API needs from the server behind it."""

    name: str
    engine: AsyncEngine
    max_model_len: int
    created: int = 0

    def health(self) -> dict:
        return {"status": "ok", "model": self.name}


# -- the app ----------------------------------------------------------------------------------------------
def build_openai_app(title: str = "Switchyard") -> FastAPI:
    app = FastAPI(title=title)

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

    @app.post("/v1/completions")
    async def completions(request: Request):
        served = _served(request)
        body = await _parse(request, CompletionRequest)
        prompts = body.prompts()
        if len(prompts) != 1:
            raise ApiError(400, "only one prompt per request is supported", "prompt")
        if body.echo or body.logprobs is not None:
            raise ApiError(400, "logprobs and echo are not supported yet", "logprobs" if body.logprobs else "echo")
        prompt = prompts[0]
        return await _respond(served, body, prompt, chat=False, prompt_param="prompt")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        served = _served(request)
        body = await _parse(request, ChatRequest)
        tokenizer = served.engine.engine.tokenizer
        if tokenizer is None:
            raise ApiError(400, "this model has no tokenizer, so no chat template; use /v1/completions with "
                                "token ids", "messages")
        if body.logprobs:
            raise ApiError(400, "logprobs are not supported yet", "logprobs")
        messages = [{"role": m.role, "content": m.text(i), **({"name": m.name} if m.name else {})}
                    for i, m in enumerate(body.messages)]
        try:
            prompt = tokenizer.apply_chat_template(messages)
        except Exception as err:
            raise ApiError(400, f"cannot apply the chat template: {err}", "messages") from err
        return await _respond(served, body, prompt, chat=True, prompt_param="messages")

    return app


def _served(request: Request) -> ServedModel:
    served = getattr(request.app.state, "served", None)
    if served is None:
        raise ApiError(503, "the model is still loading", kind="server_error")
    return served


async def _parse(request: Request, model: type[BaseModel]):
    return parse_body(await request.body(), model)


def _sampling_params(body: CommonRequest, max_tokens: int) -> SamplingParams:
    if body.n != 1:
        raise ApiError(400, "only n=1 is supported", "n")
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    try:
        return SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                              top_k=max(body.top_k, 0), seed=body.seed, stop=stop, presence_penalty=body.presence_penalty,
                              frequency_penalty=body.frequency_penalty, ignore_eos=body.ignore_eos)
    except InvalidParameter as err:
        raise ApiError(400, str(err), err.param) from err


async def _respond(served: ServedModel, body, prompt, chat: bool, prompt_param: str):
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
    requested = (body.max_completion_tokens or body.max_tokens) if chat else body.max_tokens
    if requested is not None and requested > room:
        raise ApiError(400, f"This model's maximum context length is {served.max_model_len} tokens. However, you "
                            f"requested {prompt_tokens + requested} tokens ({prompt_tokens} in the {prompt_param}, "
                            f"{requested} in the completion).", "max_tokens", "context_length_exceeded")
    params = _sampling_params(body, requested if requested is not None else room)
    seq = engine.validate(probe.prompt_ids, params)
    request_id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    seq.request_id = request_id
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(engine, seq, served.name, created, chat, include_usage),
                                 media_type="text/event-stream")
    final = None
    async for output in engine.generate(seq):
        final = output
    if final.finish_reason == "error":
        raise ApiError(503, f"generation failed: {final.error}", kind="server_error")
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


async def _stream(engine: AsyncEngine, seq, model: str, created: int, chat: bool, include_usage: bool):
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
    yield _sse("[DONE]")
