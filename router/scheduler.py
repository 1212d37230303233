"""Continuous batching: requests join and leave the running batch between steps.

Each step is either a prefill of newly admitted requests (while slots are free and the token budget lasts)
or one decode token for every running request. Prefill goes first so new requests start quickly.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from switchyard.router.kv_cache import SlotCache
from switchyard.router.sequence import Sequence


@dataclass
class Scheduled:
    kind: Literal["prefill", "decode"]
    seqs: list[Sequence]


class Scheduler:
    def __init__(self, cache: SlotCache, max_num_seqs: int, max_num_batched_tokens: int):
        self.cache = cache
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> Scheduled | None:
        admitted, tokens = [], 0
        while (self.waiting and self.cache.num_free_slots
               and len(self.running) + len(admitted) < self.max_num_seqs):
            need = len(self.waiting[0].prompt_ids)
            if admitted and tokens + need > self.max_num_batched_tokens:
                break
            seq = self.waiting.popleft()
            seq.slot = self.cache.allocate()
            admitted.append(seq)
            tokens += need
        if admitted:
            self.running.extend(admitted)
            return Scheduled("prefill", admitted)
        if self.running:
            return Scheduled("decode", list(self.running))
        return None

    def finish(self, seq: Sequence) -> None:
        """Drop a finished (or aborted) sequence and give its slot back."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        if seq.slot is not None:
            self.cache.release(seq.slot)
            seq.slot = None
