"""The caches of attention state: one slot per running sequence, preallocated so decode never allocates.

A sequence owns one slot from admission to finish; continuous batching frees and reuses slots between steps.
Layout per layer:
- `KVCache` (grouped-query attention): keys and values [num_slots, num_kv_heads, max_len, head_dim].
- `MLACache` (latent attention, deepseek_v3): one tensor [num_slots, max_len, kv_lora_rank + qk_rope_head_dim],
  per token the normalised kv latent followed by the rotated rope key shared by all heads. Keys and values are
  never stored per head: attention reads them from the latent (see `router/mla.py`).
"""

from __future__ import annotations

import torch

from switchyard.configs.model import ModelConfig


class SlotsExhausted(RuntimeError):
    pass


class SlotCache:
    """The slot bookkeeping every cache shares; subclasses hold the tensors."""

    def __init__(self, num_slots: int, max_len: int):
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
        raise NotImplementedError


class KVCache(SlotCache):
    def __init__(self, num_layers: int, num_slots: int, num_kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__(num_slots, max_len)
        shape = (num_slots, num_kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype) for _ in range(num_layers)]

    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() * 2 for k in self.keys)


class MLACache(SlotCache):
    def __init__(self, num_layers: int, num_slots: int, max_len: int, kv_lora_rank: int, qk_rope_head_dim: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__(num_slots, max_len)
        self.kv_lora_rank = kv_lora_rank
        shape = (num_slots, max_len, kv_lora_rank + qk_rope_head_dim)
        self.latents = [torch.zeros(shape, dtype=dtype) for _ in range(num_layers)]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.latents)


def make_cache(config: ModelConfig, num_slots: int, max_len: int, dtype: torch.dtype) -> KVCache | MLACache:
    """The cache the model's attention needs."""
    if config.mla is not None:
        return MLACache(config.num_layers, num_slots, max_len, config.mla.kv_lora_rank, config.mla.qk_rope_head_dim,
                        dtype)
    return KVCache(config.num_layers, num_slots, config.num_kv_heads, max_len, config.head_dim, dtype)
