"""Continuous batching with chunked prefill over a paged KV cache: requests join and leave the running batch
between steps, and one step carries every running sequence's decode token together with chunks of the
prompts being prefilled.

Per step, within `max_num_batched_tokens` new tokens (as vLLM's scheduler does):
1. one decode token for every running sequence whose tokens are all in the cache but the last sampled one:
   a decode is never held back by a prefill;
2. the rest of the budget goes to prompts, oldest first: those partly prefilled, then newly admitted ones
   (while `max_num_seqs` and free cache blocks allow). A prompt longer than what is left is cut into chunks
   that run over several steps, so a long prompt adds a bounded amount to every running sequence's step
   instead of stalling them all for a whole prefill.

Memory: a sequence takes a cache block each `block_size` tokens, as it grows. When a running sequence needs
a block and none is free, the newest running sequence not yet in this step is preempted (its blocks freed,
its prompt and output so far recomputed when it is admitted again: vLLM's recompute preemption), and no new
request is admitted in that step. The oldest sequence can therefore always grow (the pool holds at least one
sequence of max_model_len, `kv_cache.num_blocks_for`), so every request finishes, however small the pool.

A sequence samples a token only on the step that brings all its tokens into the cache, and after that on
every step.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

from switchyard.router.kv_cache import BlockPool
from switchyard.router.sequence import Sequence


@dataclass
class Scheduled:
    seqs: list[Sequence]
    num_new_tokens: list[int]  # per sequence, its tokens in this step (1 for a decode, a chunk for a prefill)
    num_prefills: int  # sequences of the step still prefilling (a prompt, or a preempted sequence's recompute)

    @property
    def kind(self) -> Literal["prefill", "decode", "mixed"]:
        n = self.num_prefills
        return "decode" if n == 0 else "prefill" if n == len(self.seqs) else "mixed"

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)


class Scheduler:
    def __init__(self, cache: BlockPool, max_num_seqs: int, max_num_batched_tokens: int):
        self.cache = cache
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admitted: holding blocks, prefilling or decoding, oldest first
        self.num_preemptions = 0  # since start (a metric, as vLLM's num_preemptions_total)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> Scheduled | None:
        budget = self.max_num_batched_tokens
        seqs: list[Sequence] = []
        counts: list[int] = []
        preemptions_before = self.num_preemptions

        def take(seq: Sequence, num_tokens: int) -> None:
            nonlocal budget
            seqs.append(seq)
            counts.append(num_tokens)
            budget -= num_tokens

        # decodes first, oldest first, so that no running sequence waits behind a prompt
        for seq in [s for s in self.running if s.decoding]:
            if budget <= 0:
                break
            if seq in self.running and self._grow(seq, 1, seqs):
                take(seq, 1)
        # then the prefills already begun, in admission order
        for seq in [s for s in self.running if not s.decoding]:
            if budget <= 0:
                break
            if seq not in self.running:  # preempted by an older sequence above
                continue
            # a chunk as long as the budget and, short of preempting, the free blocks allow
            chunk = min(seq.num_uncached, budget, self._room(seq))
            if chunk == 0:
                chunk = min(seq.num_uncached, budget, self.cache.block_size)
            if self._grow(seq, chunk, seqs):
                take(seq, chunk)
        # then new requests, while sequences, blocks and the budget last (none in a step that had to preempt)
        preempted = self.num_preemptions > preemptions_before
        while self.waiting and budget > 0 and not preempted and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            chunk = min(seq.num_uncached, budget, self._room(seq))
            if chunk == 0:
                break
            self.waiting.popleft()
            seq.blocks = self.cache.allocate(self.cache.blocks_for(chunk))
            if seq.scheduled_time is None:
                seq.scheduled_time = time.perf_counter()
            self.running.append(seq)
            take(seq, chunk)
        if not seqs:
            return None
        return Scheduled(seqs, counts, sum(not s.decoding for s in seqs))

    def _room(self, seq: Sequence) -> int:
        """New tokens `seq` can take with the blocks it has and the free ones."""
        return len(seq.blocks) * self.cache.block_size - seq.num_cached + \
            self.cache.num_free_blocks * self.cache.block_size

    def _grow(self, seq: Sequence, num_tokens: int, scheduled: list[Sequence]) -> bool:
        """Give `seq` the blocks for `num_tokens` more tokens, preempting the newest running sequences not in
        this step while none is free. False if `seq` itself had to be preempted."""
        needed = self.cache.blocks_for(seq.num_cached + num_tokens) - len(seq.blocks)
        while needed > self.cache.num_free_blocks:
            victim = next(s for s in reversed(self.running) if s not in scheduled)
            self.preempt(victim)
            if victim is seq:
                return False
        if needed > 0:
            seq.blocks += self.cache.allocate(needed)
        return True

    def preempt(self, seq: Sequence) -> None:
        """Free `seq`'s blocks and put it back at the head of the queue; it recomputes its cache when readmitted."""
        self.running.remove(seq)
        self.cache.release(seq.blocks)
        seq.blocks = []
        seq.num_cached = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence) -> None:
        """Drop a finished (or aborted) sequence and give its blocks back."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        if seq.blocks:
            self.cache.release(seq.blocks)
            seq.blocks = []
