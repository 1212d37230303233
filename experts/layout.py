"""Where a layer's routed experts live in a checkpoint, in either of the layouts real checkpoints use.

- per-expert (what released checkpoints and `save_pretrained` write): one tensor per expert and projection,
  `model.layers.{l}.mlp.experts.{e}.gate_proj.weight` [I, H], `up_proj` [I, H], `down_proj` [H, I];
  Mixtral: `model.layers.{l}.block_sparse_moe.experts.{e}.w1` (gate) / `w3` (up) / `w2` (down).
- fused (the in-memory layout of newer transformers): `model.layers.{l}.mlp.experts.gate_up_proj` [E, 2I, H]
  (gate rows first, then up rows) and `model.layers.{l}.mlp.experts.down_proj` [E, H, I].

Either way the result is the stacked form the compute stage wants: `w13` [n, 2I, H] and `w2` [n, H, I].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from switchyard.experts.checkpoint import Checkpoint, CheckpointError


@dataclass(frozen=True)
class LayerExperts:
    """The routed experts of one layer that one process holds."""

    layer: int
    expert_ids: tuple[int, ...]  # global ids, in the order of the stacked weights
    w13: torch.Tensor  # [n, 2I, H] gate and up projections
    w2: torch.Tensor  # [n, H, I] down projection


def moe_prefix(ckpt: Checkpoint, layer: int) -> str:
    """`model.layers.{l}.mlp` or, for Mixtral's released layout, `model.layers.{l}.block_sparse_moe`."""
    legacy = f"model.layers.{layer}.block_sparse_moe"
    if ckpt.config.family == "mixtral" and ckpt.has(f"{legacy}.gate.weight"):
        return legacy
    return f"model.layers.{layer}.mlp"


def load_layer_experts(ckpt: Checkpoint, layer: int, expert_ids: list[int], dtype: torch.dtype,
                       device: torch.device | str = "cpu") -> LayerExperts:
    """Read only `expert_ids` of `layer`, whichever layout the checkpoint has, onto `device`."""
    cfg = ckpt.config
    hidden, inter = cfg.hidden_size, cfg.moe_intermediate_size
    bad = [e for e in expert_ids if not 0 <= e < cfg.num_experts]
    if bad:
        raise CheckpointError(f"layer {layer}: expert ids {bad} out of range [0, {cfg.num_experts})")
    prefix = moe_prefix(ckpt, layer)
    fused = f"{prefix}.experts.gate_up_proj"
    if ckpt.has(fused):
        w13 = ckpt.get_rows(fused, expert_ids, (2 * inter, hidden))
        w2 = ckpt.get_rows(f"{prefix}.experts.down_proj", expert_ids, (hidden, inter))
    else:
        names = ("w1", "w3", "w2") if prefix.endswith("block_sparse_moe") else ("gate_proj", "up_proj", "down_proj")
        gates, downs = [], []
        for e in expert_ids:
            base = f"{prefix}.experts.{e}"
            gate = ckpt.get(f"{base}.{names[0]}.weight", (inter, hidden))
            up = ckpt.get(f"{base}.{names[1]}.weight", (inter, hidden))
            gates.append(torch.cat([gate, up], dim=0))
            downs.append(ckpt.get(f"{base}.{names[2]}.weight", (hidden, inter)))
        w13 = torch.stack(gates) if gates else torch.empty(0, 2 * inter, hidden)
        w2 = torch.stack(downs) if downs else torch.empty(0, hidden, inter)
    return LayerExperts(layer, tuple(expert_ids), w13.to(device=device, dtype=dtype).contiguous(),
                        w2.to(device=device, dtype=dtype).contiguous())
