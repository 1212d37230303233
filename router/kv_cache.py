"""The KV cache: one slot per running sequence, preallocated so decode never allocates.

Layout per layer: keys and values [num_slots, num_kv_heads, max_len, head_dim]. A sequence owns one slot from
admission to finish; continuous batching frees and reuses slots between steps.
"""

from __future__ import annotations

import torch


class SlotsExhausted(RuntimeError):
    pass


class KVCache:
    def __init__(self, num_layers: int, num_slots: int, num_kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32):
        shape = (num_slots, num_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype) for _ in range(num_layers)]
        self.max_len = max_len
        self.num_slots = num_slots
        self._free = list(range(num_slots - 1, -1, -1))

    @property
    def num_free_slots(self) -> int:
        return len(self._free)

    def allocate(self) -> int:
        if not self._free:
            raise SlotsExhausted("no free KV-cache slot")
        return self._free.pop()

    def release(self, slot: int) -> None:
        self._free.append(slot)

    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() * 2 for k in self.keys)
