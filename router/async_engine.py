"""The engine driven from asyncio: one thread runs steps; each request is an async stream of outputs.

Requests are validated in the caller's thread (so a bad one fails at once with a 4xx and never enters the
batch), then handed to the engine thread through a queue. A step's outputs go back to the event loop in one
`call_soon_threadsafe` (not one per request: each wakes the loop). A stream that falls behind the engine gets
the outputs it missed merged into one (as vLLM does), so a slow client costs one chunk, not one per token.

Faults: a step that raises (an expert group unreachable, a bug in the step) fails that step's sequences and
the engine runs on. Anything else that raises on the engine thread (a metrics callback, publishing) leaves the
engine in a state nobody can vouch for: the engine *fails* — every request in it and every later one ends at
once with an error, and `problem()` says why, so the server's health check fails and it is restarted. A step
that runs past `stuck_after_s` (a transport's deadline that does not hold) is reported by `problem()` too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from typing import AsyncIterator

from switchyard.router.engine import Engine
from switchyard.router.sampling import SamplingParams
from switchyard.router.sequence import RequestOutput, Sequence, merge_outputs

log = logging.getLogger(__name__)


class EngineFailed(RuntimeError):
    """The engine thread failed; nothing more runs here until the server is restarted."""


class AsyncEngine:
    def __init__(self, engine: Engine, on_step=None, stuck_after_s: float | None = None):
        """`on_step(stats, outputs)` is called in the engine thread after every step (metrics)."""
        self.engine = engine
        self.on_step = on_step
        self.stuck_after_s = stuck_after_s
        self.failure: str | None = None  # why the engine failed (see the module docstring); None while it serves
        self._step_started: float | None = None  # time.monotonic() of the step in progress
        # ("add", seq) | ("abort", request_id) | ("call", (fn, future))
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.errors = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="switchyard-engine")
        self._thread.start()

    def validate(self, prompt: str | list[int], params: SamplingParams, request_id: str | None = None) -> Sequence:
        """Raises InvalidParameter for a request that cannot run."""
        return self.engine.make_sequence(prompt, params, request_id)

    def submit(self, seq: Sequence) -> "OutputStream":
        """Start `seq` now (from the event loop); its outputs come from iterating the stream. A stream closed,
        or dropped, before its sequence finished aborts it: the slot is free again within a step. Raises
        EngineFailed once the engine has failed."""
        if self.failure is not None:
            raise EngineFailed(self.failure)
        loop = asyncio.get_running_loop()
        stream = OutputStream(self, seq.request_id, asyncio.Queue())
        self._streams[seq.request_id] = (loop, stream.queue)
        self._inbox.put(("add", seq))
        self._wake.set()
        return stream

    async def generate(self, seq: Sequence) -> AsyncIterator[RequestOutput]:
        async for output in self.submit(seq):
            yield output

    def call_between_steps(self, fn) -> concurrent.futures.Future:
        """Run `fn()` on the engine thread after the step in progress and before the next one (a re-placement
        switches the router's dispatch tables so, cluster/replacement/replacer.py); the future holds its result."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._inbox.put(("call", (fn, future)))
        self._wake.set()
        return future

    @property
    def num_unfinished(self) -> int:
        """Sequences submitted and not yet finished or aborted (running or waiting for a slot)."""
        return len(self._streams)

    def _abort(self, request_id: str) -> None:
        self._inbox.put(("abort", request_id))
        self._wake.set()

    def shutdown(self) -> None:
        self._stop.set()
        self._wake.set()

    def problem(self) -> str | None:
        """Why this engine cannot serve now (failed, its thread gone, a step stuck), or None: for health checks."""
        if self.failure is not None:
            return f"the engine failed: {self.failure}"
        if not self._thread.is_alive() and not self._stop.is_set():
            return "the engine thread has stopped"
        started = self._step_started
        if self.stuck_after_s is not None and started is not None:
            running = time.monotonic() - started
            if running > self.stuck_after_s:
                return f"a step has been running for {running:.0f}s"
        return None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._drain_inbox()
                if not self.engine.has_unfinished():
                    self._wake.wait()  # idle: sleep until a request (or shutdown) arrives, no polling
                    self._wake.clear()
                    continue
                self._step_started = time.monotonic()
                try:
                    outputs = self.engine.step()
                except Exception as err:  # e.g. an expert group unreachable: fail this step's requests only
                    log.exception("engine step failed")
                    self.errors += 1
                    outputs, stepped = self.engine.fail_step(f"{type(err).__name__}: {err}"), False
                else:
                    stepped = True
                finally:
                    self._step_started = None
                self._publish(outputs)
                if stepped and self.on_step is not None:
                    self.on_step(self.engine.last_step, outputs)
        except BaseException as err:  # outside a step: fail loudly, never serve from a state nobody checked
            log.exception("the engine thread failed")
            self.failure = f"{type(err).__name__}: {err}"
            self._fail_every_request()

    def _fail_every_request(self) -> None:
        """After the engine failed: end every request in it, and each one still submitted, with the error. Keeps
        answering until shutdown, so a request submitted as the engine failed does not wait forever."""
        while True:
            while True:  # what is queued is not run: its streams are answered below, its calls here
                try:
                    kind, item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if kind == "call":
                    item[1].set_exception(EngineFailed(self.failure))
            failed = [RequestOutput(request_id, "", "", (), 0, True, "error", self.failure)
                      for request_id in list(self._streams)]
            try:
                self._publish(failed)
            except Exception:  # nothing more can be done here; the health check restarts the server
                log.exception("failing the requests of a failed engine")
            if self._stop.is_set():
                return
            self._wake.wait(1.0)  # a submit that raced with the failure wakes this; else look again in a second
            self._wake.clear()

    def _drain_inbox(self) -> None:
        while True:
            try:
                kind, item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "add":
                self.engine.enqueue(item)
            elif kind == "call":
                fn, future = item
                try:
                    future.set_result(fn())
                except Exception as err:
                    future.set_exception(err)
            else:
                self.engine.abort(item)

    def _publish(self, outputs: list[RequestOutput]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, RequestOutput]]] = {}
        for output in outputs:
            # a finished sequence leaves the count at once, whether or not its reader has caught up
            target = (self._streams.pop if output.finished else self._streams.get)(output.request_id, None)
            if target is not None:
                loop, stream = target
                by_loop.setdefault(loop, []).append((stream, output))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # that loop has closed: its requests are gone
                pass


def _deliver(items: list[tuple[asyncio.Queue, RequestOutput]]) -> None:
    for stream, output in items:
        stream.put_nowait(output)


class OutputStream:
    """The outputs of one submitted sequence, as an async iterator; outputs the reader missed come merged."""

    def __init__(self, engine: AsyncEngine, request_id: str, stream: asyncio.Queue):
        self.engine, self.request_id, self.queue = engine, request_id, stream
        self.finished = False
        self._closed = False

    def __aiter__(self) -> AsyncIterator[RequestOutput]:
        return self._outputs()

    async def _outputs(self) -> AsyncIterator[RequestOutput]:
        try:
            while not self.finished:
                output: RequestOutput = await self.queue.get()
                while not output.finished and not self.queue.empty():
                    output = merge_outputs(output, self.queue.get_nowait())
                self.finished = output.finished
                yield output
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.finished and self.engine._streams.pop(self.request_id, None) is not None:
            self.engine._abort(self.request_id)  # the client went away: free the slot

    def __del__(self):  # a stream never read (its response never started): abort rather than run for nobody
        self.close()
