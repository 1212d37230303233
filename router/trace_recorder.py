"""Recording the routing of live traffic as Parquet traces (the layout of `switchyard.router.affinity.traces`).

Sampling is per sequence, so a recorded token is recorded at every layer and can be followed across layers.
The hot path only clones a few small tensors into a bounded buffer; a background thread turns them into
Parquet files. When the buffer is full, new rows are dropped and counted, never waited for.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import deque
from pathlib import Path

import numpy as np
import torch

from switchyard.configs.model import ModelConfig
from switchyard.router.affinity.traces import (RoutingTrace, TraceMetadata, concat_traces, trace_from_layer,
                                               write_traces)
from switchyard.router.batch import StepBatch
from switchyard.router.dense_model import Routing
from switchyard.router.sampling import SamplingParams


def trace_metadata(config: ModelConfig, model_name: str, source: str = "") -> TraceMetadata:
    """The file metadata of a trace of this model."""
    return TraceMetadata(model=model_name, num_experts=config.num_experts, top_k=config.top_k,
                         layers=config.moe_layers, source=source)


def record_generation(engine, prompts: list, params: SamplingParams, out_dir: str | Path, model_name: str,
                      source: str = "") -> "TraceRecorder":
    """Run `prompts` through `engine` with every token's routing recorded into one Parquet file in `out_dir`;
    returns the closed recorder (its `files` and counts)."""
    # No timed flush: on a slow machine a 30 s flush split one recording into several files.
    recorder = TraceRecorder(out_dir, trace_metadata(engine.model.config, model_name, source), rows_per_file=1 << 62,
                             flush_interval_s=None)
    engine.observer = recorder
    try:
        engine.generate(prompts, params)
    finally:
        engine.observer = None
        recorder.close()
    return recorder


class TraceRecorder:
    def __init__(self, out_dir: str | Path, metadata: TraceMetadata, sample_rate: float = 1.0,
                 max_buffer_rows: int = 1_000_000, rows_per_file: int = 500_000, flush_interval_s: float | None = 30.0):
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metadata = metadata
        self.sample_rate = sample_rate
        self.max_buffer_rows = max_buffer_rows
        self.rows_per_file = rows_per_file
        self.recorded_rows = 0
        self.dropped_rows = 0
        self.files: list[Path] = []
        self._chunks: list[tuple] = []
        self._step_cache: tuple | None = None
        self._buffered = 0
        self._lock = threading.Lock()
        self._flush_now = threading.Event()
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, args=(flush_interval_s,), daemon=True,
                                        name="switchyard-trace-writer")
        self._writer.start()

    def sampled(self, seq_numbers: torch.Tensor) -> torch.Tensor:
        """[B] bool: which sequences are recorded. A fixed hash of the number, so the choice is stable."""
        if self.sample_rate >= 1.0:
            return torch.ones_like(seq_numbers, dtype=torch.bool)
        keep = [zlib.crc32(int(n).to_bytes(8, "little")) % 10_000 < self.sample_rate * 10_000
                for n in seq_numbers.tolist()]
        return torch.tensor(keep, dtype=torch.bool)

    # -- hot path: called by forward_step for every MoE layer --------------------------------------------
    def observe(self, layer: int, batch: StepBatch, routing: Routing) -> None:
        token_seq, positions, token_ids, rows = self._step_rows(batch)
        # copies on the host: the buffer outlives the step, and the writer reads numpy arrays
        if rows is None:  # every token of the step is recorded
            chunk = (layer, token_seq, positions, token_ids, routing.expert_ids.to("cpu", copy=True),
                     routing.weights.to("cpu", copy=True))
        elif rows.numel():
            on_device = rows.to(routing.expert_ids.device)
            chunk = (layer, token_seq, positions, token_ids, routing.expert_ids[on_device].cpu(),
                     routing.weights[on_device].cpu())
        else:
            return
        count = token_seq.numel()
        with self._lock:
            if self._buffered + count > self.max_buffer_rows:
                self.dropped_rows += count
                return
            self._chunks.append(chunk)
            self._buffered += count
            if self._buffered >= self.rows_per_file:
                self._flush_now.set()

    def _step_rows(self, batch: StepBatch):
        """(seq id [n], position [n], token id [n], rows [n] or None for all) of the sampled tokens; the same for
        every layer of a step, so worked out once per step."""
        if self._step_cache is not None and self._step_cache[0] is batch:
            return self._step_cache[1]
        token_seq, (token_ids, positions, new_lens) = batch.token_seq_numbers, batch.host  # [T], on the host
        if self.sample_rate >= 1.0:
            result = (token_seq, positions, token_ids, None)
        else:
            rows = torch.repeat_interleave(self.sampled(batch.host_seq_numbers), new_lens).nonzero().squeeze(1)
            result = (token_seq[rows], positions[rows], token_ids[rows], rows)
        self._step_cache = (batch, result)
        return result

    # -- off the hot path ---------------------------------------------------------------------------------
    def _write_loop(self, every_s: float | None) -> None:  # None: flush only when full or closed
        while not self._stop.is_set():
            self._flush_now.wait(every_s)
            self._flush_now.clear()
            self.flush()

    def flush(self) -> Path | None:
        with self._lock:
            chunks, self._chunks, self._buffered = self._chunks, [], 0
        if not chunks:
            return None
        trace = concat_traces([trace_from_layer(layer, seqs.numpy(), pos.numpy(), ids.numpy(), w.numpy(),
                                                self.metadata, tokens.numpy())
                               for layer, seqs, pos, tokens, ids, w in chunks])
        path = self.out_dir / f"traces-{int(time.time())}-{len(self.files):05d}.parquet"
        write_traces(path, trace)
        self.files.append(path)
        self.recorded_rows += trace.num_rows
        return path

    def close(self) -> list[Path]:
        self._stop.set()
        self._flush_now.set()
        self._writer.join(timeout=30)
        self.flush()
        return self.files


class RoutingWindow:
    """The router's recent routing, in memory: the last `max_tokens` tokens of every MoE layer, for the rolling
    affinity fit (router/affinity/rolling.py) and the fan-out a placement predicts on what was really served.

    An engine observer, like TraceRecorder: the hot path clones the step's routing into a deque of chunks (one
    per layer call) and drops the oldest chunks past the bound. Experts dropped by adaptive routing (id -1) are
    recorded as the token's first expert, which it always keeps: the groups the token visits, and so the fan-out,
    are unchanged. `mark()` numbers the chunks so far; `trace(since=mark)` gives only what came after it, and
    `calls(since=mark)` the same calls unmerged.
    """

    def __init__(self, metadata: TraceMetadata, max_tokens: int):
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.metadata = metadata
        self.max_rows = max_tokens * max(1, len(metadata.layers))
        self._chunks: deque = deque()  # (chunk number, layer, seq [n], pos [n], expert ids [n, k])
        self._rows = 0
        self._count = 0
        self._lock = threading.Lock()

    def observe(self, layer: int, batch: StepBatch, routing: Routing) -> None:
        token_seq, positions = batch.token_seq_numbers, batch.host.positions  # [T] each, on the host
        ids = routing.expert_ids.to("cpu", copy=True)  # on the host: the window outlives the step
        if bool((ids < 0).any()):
            ids = torch.where(ids >= 0, ids, ids[:, :1])
        with self._lock:
            self._chunks.append((self._count, layer, token_seq, positions, ids))
            self._count += 1
            self._rows += len(ids)
            while self._rows > self.max_rows and len(self._chunks) > 1:
                self._rows -= len(self._chunks.popleft()[4])

    def mark(self) -> int:
        with self._lock:
            return self._count

    def holds_since(self, mark: int) -> bool:
        """Whether every chunk from `mark` on is still in the window (none evicted yet)."""
        with self._lock:
            return not self._chunks or self._chunks[0][0] <= mark

    def trace(self, since: int = 0) -> RoutingTrace:
        """The window's rows (those of chunks from `since` on) as a trace; a token seen twice at a layer (a
        preempted sequence recomputed) keeps its last routing."""
        with self._lock:
            chunks = [c for c in self._chunks if c[0] >= since]
        if not chunks:
            return trace_from_layer(self.metadata.layers[0] if self.metadata.layers else 0, np.zeros(0), np.zeros(0),
                                    np.zeros((0, self.metadata.top_k)), np.zeros((0, self.metadata.top_k)),
                                    self.metadata)
        trace = concat_traces([trace_from_layer(layer, seqs.numpy(), pos.numpy(), ids.numpy(),
                                                np.zeros(ids.shape, np.float32), self.metadata)
                               for _, layer, seqs, pos, ids in chunks])
        key = (trace.layer.astype(np.int64) << 48) | (trace.seq_id.astype(np.int64) << 24) | trace.pos.astype(np.int64)
        _, last = np.unique(key[::-1], return_index=True)
        if len(last) == trace.num_rows:
            return trace
        keep = np.zeros(trace.num_rows, bool)
        keep[trace.num_rows - 1 - last] = True
        return trace.select(keep)

    def calls(self, since: int = 0) -> list[tuple[int, np.ndarray]]:
        """(layer, expert ids [T, k]) of every recorded layer call from chunk `since` on, in order: the batches
        the router dispatched, for replaying a placement's dispatch exactly (rolling.replayed_fan_out)."""
        with self._lock:
            return [(layer, ids.numpy()) for number, layer, _, _, ids in self._chunks if number >= since]

    def __len__(self) -> int:
        return self._rows
