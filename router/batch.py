"""The shape of one forward step: which sequences, where their new tokens sit, where their cache is.

Tokens are packed ([T] = the new tokens of every sequence, one after another) for everything but attention,
which works on the padded view [B, S] (S = most new tokens of any sequence in the step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StepBatch:
    token_ids: torch.Tensor  # [T] new tokens, packed
    positions: torch.Tensor  # [T] absolute position of each new token
    slots: torch.Tensor  # [B] KV-cache slot of each sequence
    cached_lens: torch.Tensor  # [B] tokens already in the cache before this step
    new_lens: torch.Tensor  # [B] new tokens of each sequence in this step
    padded_index: torch.Tensor  # [T] index of each packed token in the flattened [B, S] view
    last_token_index: torch.Tensor  # [B] packed index of each sequence's last new token
    max_new: int  # S
    max_total: int  # longest sequence after this step (keys attended to)
    seq_numbers: torch.Tensor | None = None  # [B] Sequence.number of each sequence (for traces)
    first_slot_if_contiguous: int | None = None  # slots are first, first+1, ...: attention can slice the cache

    @property
    def num_seqs(self) -> int:
        return int(self.slots.numel())

    @classmethod
    def build(cls, new_tokens: list[list[int]], cached_lens: list[int], slots: list[int],
              seq_numbers: list[int] | None = None) -> "StepBatch":
        new_lens = [len(t) for t in new_tokens]
        max_new = max(new_lens)
        token_ids, positions, padded, last = [], [], [], []
        for b, (tokens, cached) in enumerate(zip(new_tokens, cached_lens)):
            start = len(token_ids)
            token_ids.extend(tokens)
            positions.extend(range(cached, cached + len(tokens)))
            padded.extend(range(b * max_new, b * max_new + len(tokens)))
            last.append(start + len(tokens) - 1)
        long = torch.long
        return cls(
            token_ids=torch.tensor(token_ids, dtype=long),
            positions=torch.tensor(positions, dtype=long),
            slots=torch.tensor(slots, dtype=long),
            cached_lens=torch.tensor(cached_lens, dtype=long),
            new_lens=torch.tensor(new_lens, dtype=long),
            padded_index=torch.tensor(padded, dtype=long),
            last_token_index=torch.tensor(last, dtype=long),
            max_new=max_new,
            max_total=max(c + n for c, n in zip(cached_lens, new_lens)),
            seq_numbers=None if seq_numbers is None else torch.tensor(seq_numbers, dtype=long),
            first_slot_if_contiguous=slots[0] if slots == list(range(slots[0], slots[0] + len(slots))) else None,
        )

    def split(self, parts: int) -> list["StepBatch"]:
        """Micro-batches of whole sequences (for overlapping one's attention with another's experts)."""
        bounds = torch.linspace(0, self.num_seqs, parts + 1).round().long().tolist()
        starts = (self.last_token_index - self.new_lens + 1).tolist()
        out = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi <= lo:
                continue
            tok_lo, tok_hi = starts[lo], int(self.last_token_index[hi - 1]) + 1
            tokens = self.token_ids[tok_lo:tok_hi]
            per_seq = [tokens[s - tok_lo:s - tok_lo + n].tolist() for s, n in
                       zip(starts[lo:hi], self.new_lens[lo:hi].tolist())]
            numbers = None if self.seq_numbers is None else self.seq_numbers[lo:hi].tolist()
            out.append(StepBatch.build(per_seq, self.cached_lens[lo:hi].tolist(), self.slots[lo:hi].tolist(), numbers))
        return out
