"""A prompt's experts at the first MoE layer, guessed without a forward pass: for a request still waiting.

The first MoE layer's gate is applied to the prompt's token embeddings, normed as the layer norms its input:
the attention (and any dense layers) before it is skipped, so this is a guess whose quality depends on how
much the residual stream still looks like the embeddings there (docs/affinity.md measures it). Later layers
are the transition matrix's business (cluster/autoscaling/forecast.py).
"""

from __future__ import annotations

import torch

from switchyard.router.dense_model import DenseModel
from switchyard.router.gates import route
from switchyard.router.ops import rms_norm


def first_moe_index(model: DenseModel) -> int:
    """Index in `model.layers` of the first layer with a gate."""
    for index, layer in enumerate(model.layers):
        if layer.gate is not None:
            return index
    raise ValueError("the model has no MoE layer")


def prompt_picks(model: DenseModel, prompts: list[list[int]]) -> torch.Tensor:
    """prompts (token ids) -> [R, E] float32 expected picks per token at the first MoE layer (rows sum to
    top_k): the share of the prompt's tokens whose gate picks each expert, times top_k."""
    if not prompts:
        return torch.zeros(0, model.config.num_experts)
    index = first_moe_index(model)
    layer, cfg = model.layers[index], model.config
    lengths = torch.tensor([len(p) for p in prompts])
    ids = torch.tensor([t for p in prompts for t in p], dtype=torch.long, device=model.device)  # [T]
    with torch.inference_mode():
        h = rms_norm(model.embed(ids), layer.post_norm, cfg.rms_norm_eps)  # [T, H]
        chosen = route(cfg, h, layer.gate, layer.gate_score_bias).expert_ids.cpu()  # [T, k]
    owner = torch.repeat_interleave(torch.arange(len(prompts)), lengths)  # [T]
    counts = torch.zeros(len(prompts), cfg.num_experts)
    counts.index_put_((owner[:, None].expand_as(chosen), chosen), torch.ones(chosen.shape), accumulate=True)
    return counts / lengths[:, None]  # [R, E]: top_k picks a token
