"""The shape of one forward step: which sequences, where their new tokens sit, where their cache blocks are.

Tokens are packed ([T] = the new tokens of every sequence, one after another) for everything but attention,
which works on the padded view [B, S] (S = most new tokens of any sequence in the step). Every index tensor
is built on the host and moved to the device in one copy: a step pays one transfer, not one per tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate
from typing import NamedTuple

import torch

from switchyard.router.kv_cache import BlockPool, scratch_block_tables


class HostTokens(NamedTuple):
    """The step's new tokens on the host, for what reads them there (trace recorder, routing window): on a
    GPU, their copies from before the transfer, so reading them waits for nothing."""

    token_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    new_lens: torch.Tensor  # [B]


@dataclass
class StepBatch:
    token_ids: torch.Tensor  # [T] new tokens, packed
    positions: torch.Tensor  # [T] absolute position of each new token
    cached_lens: torch.Tensor  # [B] tokens already in the cache before this step
    new_lens: torch.Tensor  # [B] new tokens of each sequence in this step
    padded_index: torch.Tensor  # [T] index of each packed token in the flattened [B, S] view
    last_token_index: torch.Tensor  # [B] packed index of each sequence's last new token
    block_tables: torch.Tensor  # [B, N] cache blocks of each sequence (N = blocks of the longest; 0-padded)
    slot_mapping: torch.Tensor  # [T] row of each new token in the flattened block pool: block * size + offset
    block_size: int
    max_new: int  # S
    max_total: int  # longest sequence after this step (keys attended to)
    seq_numbers: list[int] | None = None  # Sequence.number of each sequence (for traces)
    # what it was built from, on the host: (new tokens, cached lengths, block tables), so that splitting it
    # reads nothing back from the device
    host_inputs: tuple[list[list[int]], list[int], list[list[int]]] | None = None
    host: HostTokens | None = None  # the same tokens as token_ids, positions, new_lens, on the host

    @property
    def num_seqs(self) -> int:
        return int(self.new_lens.numel())

    @property
    def device(self) -> torch.device:
        return self.token_ids.device

    @classmethod
    def build(cls, new_tokens: list[list[int]], cached_lens: list[int], block_tables: list[list[int]],
              block_size: int, seq_numbers: list[int] | None = None,
              device: torch.device | str = "cpu") -> "StepBatch":
        new_lens = [len(t) for t in new_tokens]
        max_new = max(new_lens)
        max_total = max(c + n for c, n in zip(cached_lens, new_lens))
        num_blocks = -(-max_total // block_size)
        token_ids, positions, padded, last, slots, tables = [], [], [], [], [], []
        for b, (tokens, cached, table) in enumerate(zip(new_tokens, cached_lens, block_tables)):
            start = len(token_ids)
            token_ids.extend(tokens)
            span = range(cached, cached + len(tokens))
            positions.extend(span)
            slots.extend(table[p // block_size] * block_size + p % block_size for p in span)
            padded.extend(range(b * max_new, b * max_new + len(tokens)))
            last.append(start + len(tokens) - 1)
            row = table[:num_blocks]
            tables.extend(row)
            tables.extend([0] * (num_blocks - len(row)))  # past the sequence's end: masked out by attention
        T, B = len(token_ids), len(new_tokens)
        parts = [token_ids, positions, cached_lens, new_lens, padded, last, tables, slots]
        sizes = [T, T, B, B, T, B, B * num_blocks, T]
        flat = torch.tensor([v for part in parts for v in part], dtype=torch.long)
        host_token, host_pos, _, host_new = flat.split(sizes)[:4]
        if torch.device(device).type != "cpu":
            flat = flat.pin_memory().to(device, non_blocking=True) if torch.cuda.is_available() else flat.to(device)
        token_t, pos_t, cached_t, new_t, padded_t, last_t, tables_t, slots_t = flat.split(sizes)
        return cls(token_ids=token_t, positions=pos_t, cached_lens=cached_t, new_lens=new_t, padded_index=padded_t,
                   last_token_index=last_t, block_tables=tables_t.view(B, num_blocks), slot_mapping=slots_t,
                   block_size=block_size, max_new=max_new, max_total=max_total, seq_numbers=seq_numbers,
                   host_inputs=(new_tokens, cached_lens, block_tables), host=HostTokens(host_token, host_pos, host_new))

    @cached_property
    def host_seq_numbers(self) -> torch.Tensor:
        """[B] on the host: each sequence's Sequence.number (without numbers, its row)."""
        return torch.tensor(self.seq_numbers) if self.seq_numbers is not None else torch.arange(self.num_seqs)

    @cached_property
    def token_seq_numbers(self) -> torch.Tensor:
        """[T] on the host: the number of the sequence each new token belongs to."""
        return torch.repeat_interleave(self.host_seq_numbers, self.host.new_lens)

    @classmethod
    def scratch_prefill(cls, prompts: list[list[int]], cache: BlockPool) -> "StepBatch":
        """Whole prompts from position 0 in scratch blocks of `cache` (router/kv_cache.py), for offline forwards
        (scoring, tests) while no engine runs sequences in that cache."""
        tables = scratch_block_tables(cache, [len(p) for p in prompts])
        return cls.build(prompts, [0] * len(prompts), tables, cache.block_size, device=cache.device)

    @cached_property
    def attention_parts(self) -> list[tuple[torch.Tensor | None, "StepBatch"]]:
        """The step split for attention: [(None, self)] when its sequences all decode (one new token each) or all
        prefill; else its decoding sequences and its prefilling ones as two batches, each with the packed index
        of its tokens. Attention pads every sequence to the step's most new tokens, so one prompt joining 63
        decoding sequences would otherwise make each of them attend with ~50 query rows (10 ms a layer against
        1.5 ms at 64 sequences on this model)."""
        if self.host_inputs is None or self.max_new == 1:
            return [(None, self)]
        tokens, cached, tables = self.host_inputs
        decoding, prefilling = [], []
        for b, t in enumerate(tokens):
            (decoding if len(t) == 1 else prefilling).append(b)
        if not decoding or not prefilling:
            return [(None, self)]
        starts = [0, *accumulate(len(t) for t in tokens)]  # packed index of each sequence's first new token
        parts = []
        for rows in (decoding, prefilling):
            index = [i for b in rows for i in range(starts[b], starts[b + 1])]
            numbers = None if self.seq_numbers is None else [self.seq_numbers[b] for b in rows]
            part = StepBatch.build([tokens[b] for b in rows], [cached[b] for b in rows], [tables[b] for b in rows],
                                   self.block_size, numbers, self.device)
            parts.append((torch.tensor(index, dtype=torch.long).to(self.device), part))
        return parts

    def split(self, parts: int) -> list["StepBatch"]:
        """Micro-batches of whole sequences (for overlapping one's attention with another's experts)."""
        bounds = torch.linspace(0, self.num_seqs, parts + 1).round().long().tolist()
        tokens, cached, tables = self.host_inputs
        return [StepBatch.build(tokens[lo:hi], cached[lo:hi], tables[lo:hi], self.block_size,
                                None if self.seq_numbers is None else self.seq_numbers[lo:hi], self.device)
                for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
