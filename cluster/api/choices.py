"""One API request as engine sequences, and their outputs as OpenAI responses (whole, or streamed as SSE).

A completions request may carry several prompts and ask `n` choices of each: prompt i's choice j is sequence
`i * n + j` (OpenAI's `index`). Each choice runs as its own sequence in the batch; with a `seed`, choice j
samples from `seed + j`, so the n choices differ but each is reproducible.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator

from switchyard.cluster.api.logprobs import (Decode, chat_logprobs, completion_logprobs, text_length,
                                                 token_decoder)
from switchyard.cluster.api.requests import INT64, ApiError, ChatRequest, CommonRequest
from switchyard.router.async_engine import AsyncEngine, OutputStream
from switchyard.router.generation_config import sampling_params as with_defaults
from switchyard.router.sampling import InvalidParameter, SamplingParams
from switchyard.router.sequence import RequestOutput, Sequence, merge_all


@dataclass
class Choice:
    index: int
    seq: Sequence
    prompt_text: str = ""  # what `echo` puts before the completion
    echo_only: bool = False  # echo with max_tokens 0: the prompt scored, nothing generated
    offset: int = 0  # characters of this choice's text already streamed (for `text_offset`)
    final: RequestOutput | None = field(default=None, repr=False)
    stream: OutputStream | None = field(default=None, repr=False)


@dataclass
class Job:
    """The sequences of one request and how to answer it."""

    request_id: str
    model: str
    created: int
    chat: bool
    body: CommonRequest
    choices: list[Choice]
    prompt_tokens: int
    decode: Decode  # token id → text


def sampling_params(body: CommonRequest, max_tokens: int, defaults: dict, **logprobs) -> SamplingParams:
    """The request's sampling fields; those it leaves out come from `defaults` (generation_config.json)."""
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    try:
        return with_defaults(defaults, max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                             top_k=None if body.top_k is None else max(body.top_k, 0), seed=body.seed, stop=stop,
                             presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
                             repetition_penalty=body.repetition_penalty, ignore_eos=body.ignore_eos, **logprobs)
    except InvalidParameter as err:
        raise ApiError(400, str(err), err.param) from err


def make_job(engine: AsyncEngine, max_model_len: int, model: str, body: CommonRequest,
             prompts: list[str | list[int]], created: int, sampling_defaults: dict) -> Job:
    """Validate every prompt and build its sequences; raises ApiError before anything reaches the engine."""
    chat = isinstance(body, ChatRequest)
    prompt_param = "messages" if chat else "prompt"
    tokenizer = engine.engine.tokenizer
    choices, prompt_tokens = [], 0
    for p, prompt in enumerate(prompts):
        try:
            ids = engine.validate(prompt, SamplingParams(max_tokens=1)).prompt_ids
        except InvalidParameter as err:
            code = "context_length_exceeded" if "context" in str(err) else None
            raise ApiError(400, str(err), prompt_param, code) from err
        prompt_tokens += len(ids)
        room = max_model_len - len(ids)
        requested = (body.max_completion_tokens or body.max_tokens) if chat else body.max_tokens
        if requested is not None and requested > room:
            raise ApiError(400, f"This model's maximum context length is {max_model_len} tokens. However, you "
                                f"requested {len(ids) + requested} tokens ({len(ids)} in the {prompt_param}, "
                                f"{requested} in the completion).", "max_tokens", "context_length_exceeded")
        echo = not chat and body.echo
        echo_only = echo and requested == 0
        if chat:
            logprobs = {"logprobs": (body.top_logprobs or 0) if body.logprobs else None}
        else:
            logprobs = {"logprobs": body.logprobs,
                        "prompt_logprobs": body.logprobs if echo and body.logprobs is not None else None}
        # echo with max_tokens 0 scores the prompt: its one sampled token comes from the prefill, and is dropped
        params = sampling_params(body, 1 if echo_only else (requested if requested is not None else room),
                                 sampling_defaults, **logprobs)
        prompt_text = ""
        if echo:
            prompt_text = prompt if isinstance(prompt, str) else (tokenizer.decode(ids) if tokenizer else "")
        for j in range(body.n):
            choice_params = params
            if body.seed is not None and j:
                seed = (body.seed + j + INT64) % (2 * INT64) - INT64  # stays an int64
                choice_params = dataclasses.replace(params, seed=seed)
            seq = engine.validate(ids, choice_params)
            choices.append(Choice(p * body.n + j, seq, prompt_text, echo_only))
    request_id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    for c in choices:
        c.seq.request_id = f"{request_id}-{c.index}"
    return Job(request_id, model, created, chat, body, choices, prompt_tokens, token_decoder(tokenizer))


def start(engine: AsyncEngine, job: Job, max_unfinished: int | None) -> None:
    """Admit the job's sequences into the engine at once, or refuse them all with a 429 while more than
    `max_unfinished` sequences would be running or waiting (a flood is turned away here, in the event loop,
    and never slows the running batch)."""
    wanted = len(job.choices)
    if max_unfinished is not None:
        if wanted > max_unfinished:
            raise ApiError(400, f"this request asks for {wanted} sequences (prompts × n); this server takes at "
                                f"most {max_unfinished} at once", "n")
        if engine.num_unfinished + wanted > max_unfinished:
            raise ApiError(429, f"the server is at capacity ({engine.num_unfinished} requests running or waiting); "
                                "retry after a moment", code="too_many_requests", kind="rate_limit_error",
                           headers={"Retry-After": "1"})
    for choice in job.choices:
        choice.stream = engine.submit(choice.seq)


def close(job: Job) -> None:
    """Abort what is still running (the client went away, or another choice failed)."""
    for choice in job.choices:
        if choice.stream is not None:
            choice.stream.close()


async def run_choices(job: Job) -> AsyncIterator[tuple[Choice, RequestOutput]]:
    """The outputs of every (started) choice as they come. Closing this generator aborts them all."""
    choices = job.choices
    if len(choices) == 1:
        try:
            async for output in choices[0].stream:
                yield choices[0], output
        finally:
            close(job)
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(choice: Choice) -> None:
        try:
            async for output in choice.stream:
                queue.put_nowait((choice, output))
        finally:
            queue.put_nowait((choice, None))

    tasks = [asyncio.create_task(pump(c)) for c in choices]
    try:
        running = len(tasks)
        while running:
            choice, output = await queue.get()
            if output is None:
                running -= 1
            else:
                yield choice, output
    finally:
        for task in tasks:
            task.cancel()
        close(job)
        await asyncio.gather(*tasks, return_exceptions=True)


# A failed step is most often an expert group with no live replica: Serve starts one in its place within seconds
# to minutes (a new node, the weights to load); the client should come back rather than give up.
FAILURE_RETRY_AFTER_S = 5


def _failure(output: RequestOutput) -> ApiError:
    return ApiError(503, f"generation failed: {output.error}", kind="server_error",
                    headers={"Retry-After": str(FAILURE_RETRY_AFTER_S)})


# -- whole responses --------------------------------------------------------------------------------------
async def respond(job: Job) -> dict:
    outputs: dict[int, list[RequestOutput]] = {}
    async for choice, output in run_choices(job):
        outputs.setdefault(choice.index, []).append(output)
        if output.finish_reason == "error":
            raise _failure(output)
    for choice in job.choices:
        choice.final = merge_all(outputs[choice.index])
    body = {"id": job.request_id, "object": "chat.completion" if job.chat else "text_completion",
            "created": job.created, "model": job.model,
            "choices": [_whole_choice(job, c) for c in job.choices], "usage": usage(job)}
    return body


def _whole_choice(job: Job, choice: Choice) -> dict:
    final = choice.final
    if job.chat:
        logprobs = chat_logprobs(job.decode, final.logprobs) if job.body.logprobs else None
        return {"index": choice.index, "message": {"role": "assistant", "content": final.text},
                "logprobs": logprobs, "finish_reason": final.finish_reason}
    text = final.text if not choice.echo_only else ""
    logprobs = None
    if job.body.logprobs is not None:
        logprobs = completion_logprobs(job.decode, _completion_tokens(choice, final), 0)
    return {"index": choice.index, "text": choice.prompt_text + text, "logprobs": logprobs,
            "finish_reason": final.finish_reason}


def _completion_tokens(choice: Choice, output: RequestOutput) -> list:
    """(token id, logprobs) in text order: the echoed prompt's (in the output that first carries them), then
    the generated ones (none for an echo of the prompt alone)."""
    tokens = []
    if output.prompt_logprobs is not None:
        tokens = list(zip(choice.seq.prompt_ids, output.prompt_logprobs))
    if not choice.echo_only:
        tokens += [(e.token_id, e) for e in output.logprobs]
    return tokens


def usage(job: Job) -> dict:
    completion = sum(0 if c.echo_only else len(c.final.token_ids) for c in job.choices if c.final is not None)
    return {"prompt_tokens": job.prompt_tokens, "completion_tokens": completion,
            "total_tokens": job.prompt_tokens + completion}


# -- streams ----------------------------------------------------------------------------------------------
def _sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


async def stream(job: Job) -> AsyncIterator[str]:
    kind = "chat.completion.chunk" if job.chat else "text_completion"
    options = job.body.stream_options
    include_usage = bool(options and options.include_usage)

    def event(choice: dict) -> str:
        payload = {"id": job.request_id, "object": kind, "created": job.created, "model": job.model,
                   "choices": [choice]}
        if include_usage:
            payload["usage"] = None
        return _sse(payload)

    if job.chat:
        for c in job.choices:
            yield event({"index": c.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                         "finish_reason": None})
    elif job.body.logprobs is None:  # the echoed prompt at once (with logprobs, it comes with its scores)
        for c in job.choices:
            if c.prompt_text:
                c.offset = len(c.prompt_text)
                yield event({"index": c.index, "text": c.prompt_text, "logprobs": None, "finish_reason": None})
    async for choice, output in run_choices(job):
        choice.final = output  # the state so far; a stream sends each output's logprobs as they come
        if output.finish_reason == "error":
            yield _sse(_failure(output).body())
            yield _sse("[DONE]")
            return
        delta = _stream_delta(job, choice, output)
        if delta is not None:
            yield event(delta)
        if output.finished:
            finish = {"index": choice.index, "logprobs": None, "finish_reason": output.finish_reason}
            yield event({**finish, "delta": {}} if job.chat else {**finish, "text": ""})
    if include_usage:
        yield _sse({"id": job.request_id, "object": kind, "created": job.created, "model": job.model,
                    "choices": [], "usage": usage(job)})
    yield _sse("[DONE]")


def _stream_delta(job: Job, choice: Choice, output: RequestOutput) -> dict | None:
    """The chunk of one output: its new text and the logprobs of its new tokens; None if it has neither."""
    if job.chat:
        logprobs = chat_logprobs(job.decode, output.logprobs) if job.body.logprobs and output.logprobs else None
        if not output.delta_text and logprobs is None:
            return None
        return {"index": choice.index, "delta": {"content": output.delta_text}, "logprobs": logprobs,
                "finish_reason": None}
    text = "" if choice.echo_only else output.delta_text
    logprobs = None
    if job.body.logprobs is not None:
        if output.prompt_logprobs is not None:
            text = choice.prompt_text + text
        tokens = _completion_tokens(choice, output)
        if tokens:
            logprobs = completion_logprobs(job.decode, tokens, choice.offset)
            choice.offset += text_length(logprobs)
    if not text and logprobs is None:
        return None
    return {"index": choice.index, "text": text, "logprobs": logprobs, "finish_reason": None}
