"""Continuous batching with chunked prefill: requests join and leave the running batch between steps, and one
step carries every running sequence's decode token together with chunks of the prompts being prefilled.

Per step, within `max_num_batched_tokens` new tokens (as vLLM's scheduler does):
1. one decode token for every sequence whose prompt is in the cache: a decode is never held back by a prefill;
2. the rest of the budget goes to prompts, oldest first: those partly prefilled, then newly admitted ones
   (while a KV-cache slot and `max_num_seqs` allow). A prompt longer than what is left is cut into chunks
   that run over several steps, so a long prompt adds a bounded amount to every running sequence's step
   instead of stalling them all for a whole prefill.

A sequence samples a token only on the step that brings its whole prompt into the cache, and after that on
every step.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

from switchyard.router.kv_cache import SlotCache
from switchyard.router.sequence import Sequence


@dataclass
class Scheduled:
    seqs: list[Sequence]
    num_new_tokens: list[int]  # per sequence, its tokens in this step (1 for a decode, a chunk for a prefill)
    num_prefills: int  # sequences of the step still prefilling their prompt

    @property
    def kind(self) -> Literal["prefill", "decode", "mixed"]:
        n = self.num_prefills
        return "decode" if n == 0 else "prefill" if n == len(self.seqs) else "mixed"

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)


class Scheduler:
    def __init__(self, cache: SlotCache, max_num_seqs: int, max_num_batched_tokens: int):
        self.cache = cache
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admitted: holding a slot, prefilling or decoding, oldest first

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> Scheduled | None:
        budget = self.max_num_batched_tokens
        seqs, counts = [], []

        def take(seq: Sequence, num_tokens: int) -> int:
            seqs.append(seq)
            counts.append(num_tokens)
            return num_tokens

        for seq in self.running:  # decodes first, so that no running sequence waits behind a prompt
            if seq.prompt_done and budget > 0:
                budget -= take(seq, 1)
        for seq in self.running:  # then the prompts already begun, in admission order
            if not seq.prompt_done and budget > 0:
                budget -= take(seq, min(seq.num_uncached, budget))
        # then new requests, while slots and the budget last
        while self.waiting and budget > 0 and self.cache.num_free_slots and len(self.running) < self.max_num_seqs:
            seq = self.waiting.popleft()
            seq.slot = self.cache.allocate()
            seq.scheduled_time = time.perf_counter()
            self.running.append(seq)
            budget -= take(seq, min(seq.num_uncached, budget))
        if not seqs:
            return None
        # in slot order: when the step's slots are a run (a full batch), attention reads the cache as a view
        order = sorted(range(len(seqs)), key=lambda i: seqs[i].slot)
        seqs, counts = [seqs[i] for i in order], [counts[i] for i in order]
        return Scheduled(seqs, counts, sum(not s.prompt_done for s in seqs))

    def finish(self, seq: Sequence) -> None:
        """Drop a finished (or aborted) sequence and give its slot back."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        if seq.slot is not None:
            self.cache.release(seq.slot)
            seq.slot = None
