"""The KV cache as a pool of fixed-size blocks (paged, as vLLM's PagedAttention), sized by a memory budget.

A sequence holds a list of blocks (its block table) that grows by one block each `block_size` tokens; the
scheduler admits and grows sequences by free blocks and preempts when they run out (router/scheduler.py).
Token `p` of a sequence lives in block `table[p // block_size]` at offset `p % block_size`. Attention gathers
each step's sequences' blocks into [B, L] rows (`cache_rows` in router/ops.py).

Layout per layer, block-major so that a token's entry is one row of the flattened pool:
- `KVCache` (grouped-query attention): keys and values [num_blocks, block_size, num_kv_heads, head_dim].
- `MLACache` (latent attention, deepseek_v3): [num_blocks, block_size, kv_lora_rank + qk_rope_head_dim], per
  token the normalised kv latent followed by the rotated rope key shared by all heads. Keys and values are
  never stored per head: attention reads them from the latent (see `router/mla.py`).
"""

from __future__ import annotations

import math

import torch

from switchyard.configs.engine import EngineConfig
from switchyard.configs.model import ConfigError, ModelConfig


class BlocksExhausted(RuntimeError):
    pass


class BlockPool:
    """The block bookkeeping every cache shares; subclasses hold the tensors."""

    def __init__(self, num_blocks: int, block_size: int, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free = list(range(num_blocks - 1, -1, -1))

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def allocate(self, count: int) -> list[int]:
        if count > len(self._free):
            raise BlocksExhausted(f"{count} KV-cache blocks asked for, {len(self._free)} free")
        taken = self._free[len(self._free) - count:][::-1]
        del self._free[len(self._free) - count:]
        return taken

    def release(self, blocks: list[int]) -> None:
        self._free.extend(reversed(blocks))

    def nbytes(self) -> int:
        raise NotImplementedError


class KVCache(BlockPool):
    def __init__(self, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        super().__init__(num_blocks, block_size, device)
        shape = (num_blocks, block_size, num_kv_heads, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]

    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() * 2 for k in self.keys)


class MLACache(BlockPool):
    def __init__(self, num_layers: int, num_blocks: int, block_size: int, kv_lora_rank: int, qk_rope_head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        super().__init__(num_blocks, block_size, device)
        self.kv_lora_rank = kv_lora_rank
        shape = (num_blocks, block_size, kv_lora_rank + qk_rope_head_dim)
        self.latents = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.latents)


def bytes_per_token(config: ModelConfig, dtype: torch.dtype) -> int:
    """Cache bytes one token takes over all layers."""
    size = torch.empty((), dtype=dtype).element_size()
    if config.mla is not None:
        per_layer = config.mla.kv_lora_rank + config.mla.qk_rope_head_dim
    else:
        per_layer = 2 * config.num_kv_heads * config.head_dim
    return config.num_layers * per_layer * size


def num_blocks_for(model: ModelConfig, engine: EngineConfig, dtype: torch.dtype,
                   free_device_bytes: tuple[int, int] | None = None) -> int:
    """Blocks the cache gets (see EngineConfig). `free_device_bytes`: (free, total) of the GPU now, with the
    weights loaded, for `gpu_memory_utilization`. Refuses a budget that cannot hold one sequence of
    max_model_len: such an engine could never finish a long request."""
    block_bytes = bytes_per_token(model, dtype) * engine.block_size
    per_sequence = math.ceil(engine.max_model_len / engine.block_size)
    if engine.kv_cache_memory is not None:
        budget, source = engine.kv_cache_memory, f"kv_cache_memory ({engine.kv_cache_memory} bytes)"
    elif engine.gpu_memory_utilization is not None:
        if free_device_bytes is None:
            raise ConfigError("gpu_memory_utilization needs the GPU's free memory")
        free, total = free_device_bytes
        budget = int(engine.gpu_memory_utilization * total) - (total - free)
        source = (f"gpu_memory_utilization {engine.gpu_memory_utilization} of {total / 2**30:.1f} GiB, with "
                  f"{(total - free) / 2**30:.1f} GiB already in use")
    else:
        return engine.max_num_seqs * per_sequence
    blocks = max(0, budget) // block_bytes
    if blocks < per_sequence:
        raise ConfigError(
            f"the KV cache budget, {source}, holds {blocks} blocks of {engine.block_size} tokens "
            f"({block_bytes} bytes each); one sequence of max_model_len {engine.max_model_len} needs {per_sequence}"
            f" ({per_sequence * block_bytes} bytes): raise the budget or lower max_model_len")
    return int(blocks)


def make_cache(config: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype,
               device: torch.device | str = "cpu") -> KVCache | MLACache:
    """The cache the model's attention needs."""
    if config.mla is not None:
        return MLACache(config.num_layers, num_blocks, block_size, config.mla.kv_lora_rank,
                        config.mla.qk_rope_head_dim, dtype, device)
    return KVCache(config.num_layers, num_blocks, block_size, config.num_kv_heads, config.head_dim, dtype, device)


def scratch_block_tables(cache: BlockPool, lengths: list[int]) -> list[list[int]]:
    """Disjoint block tables for sequences of `lengths`, from block 0 on, for offline forwards (scoring a
    corpus, tests) that use the cache while no engine runs sequences in it; nothing is allocated."""
    tables, next_block = [], 0
    for length in lengths:
        count = cache.blocks_for(length)
        tables.append(list(range(next_block, next_block + count)))
        next_block += count
    if next_block > cache.num_blocks:
        raise ValueError(f"{next_block} blocks needed, the cache has {cache.num_blocks}")
    return tables
