"""The [Router] stage: which routed experts each token goes to, and with what weight. One function a rule.

- `softmax_top_k` (mixtral, qwen2_moe, qwen3_moe, olmoe): softmax over all experts, the top k, renormalised to
  sum 1 if `norm_topk_prob`.
- `grouped_sigmoid_top_k` (deepseek_v3): sigmoid scores; a per-expert bias (learned for load balance) steers the
  choice but not the weights; the choice is limited to the best `topk_groups` of `num_groups` expert groups;
  the chosen weights are renormalised if asked, then scaled by `routed_scaling_factor`.

Weights are float32 whatever the model's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from switchyard.configs.model import ModelConfig


@dataclass
class Routing:
    expert_ids: torch.Tensor  # [T, k] int64; -1 = no expert in this place (token-adaptive routing)
    weights: torch.Tensor  # [T, k] float32; 0 where the id is -1


def route(config: ModelConfig, h: torch.Tensor, gate: torch.Tensor, score_bias: torch.Tensor | None) -> Routing:
    """h [T, H] post-attention-norm hidden states, gate [E, H], score_bias [E] or None → the family's choice."""
    if config.scoring == "sigmoid":
        logits = F.linear(h.float(), gate.float())  # [T, E]; the reference computes this gate in float32
        return grouped_sigmoid_top_k(logits, score_bias, config.top_k, config.num_expert_groups, config.topk_groups,
                                     config.norm_topk_prob, config.routed_scaling_factor)
    return softmax_top_k(F.linear(h, gate).float(), config.top_k, config.norm_topk_prob)


def softmax_top_k(logits: torch.Tensor, top_k: int, normalize: bool) -> Routing:
    """logits [T, E] float32 → the top_k experts by softmax probability."""
    probs = torch.softmax(logits, dim=-1)  # [T, E]
    weights, expert_ids = torch.topk(probs, top_k, dim=-1)  # [T, k]
    if normalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return Routing(expert_ids, weights)


def grouped_sigmoid_top_k(logits: torch.Tensor, score_bias: torch.Tensor | None, top_k: int, num_groups: int,
                          topk_groups: int, normalize: bool, scaling: float) -> Routing:
    """logits [T, E] float32, score_bias [E] → DeepSeek-V3's `noaux_tc` choice."""
    T, E = logits.shape
    scores = logits.sigmoid()  # [T, E]
    for_choice = scores if score_bias is None else scores + score_bias.float()  # [T, E]
    if topk_groups < num_groups:
        grouped = for_choice.view(T, num_groups, E // num_groups)  # [T, G, E/G]
        group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)  # [T, G]
        best_groups = group_scores.topk(topk_groups, dim=-1).indices  # [T, topk_groups]
        allowed = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, best_groups, True)  # [T, G]
        allowed = allowed.unsqueeze(-1).expand(T, num_groups, E // num_groups).reshape(T, E)
        for_choice = for_choice.masked_fill(~allowed, float("-inf"))
    expert_ids = for_choice.topk(top_k, dim=-1).indices  # [T, k]
    weights = scores.gather(1, expert_ids)  # [T, k] from the unbiased scores
    if normalize:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return Routing(expert_ids, weights * scaling)
