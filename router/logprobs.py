"""Log-probabilities of tokens: what `logprobs`, `top_logprobs` and `echo` return.

They are `log_softmax` of the model's raw logits in float32: before the presence and frequency penalties,
temperature, top-k and top-p (as vLLM's default `logprobs_mode="raw_logprobs"`), so that they score the text
under the model itself and do not depend on how it was sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # the k most likely tokens with their logprobs, most likely first


def token_logprobs(logits: torch.Tensor, token_ids: list[int], num_top: list[int]) -> list[TokenLogprob]:
    """logits [N, V] → for row i, the logprob of `token_ids[i]` and the `num_top[i]` most likely tokens."""
    if not token_ids:
        return []
    logprobs = torch.log_softmax(logits.float(), dim=-1)  # [N, V]
    chosen = logprobs.gather(1, torch.tensor(token_ids, device=logprobs.device)[:, None]).squeeze(1).tolist()  # [N]
    k = min(max(num_top), logprobs.shape[1])
    top_values, top_ids = logprobs.topk(k, dim=-1) if k else (logprobs[:, :0], logprobs[:, :0].long())  # [N, k]
    top_values, top_ids = top_values.tolist(), top_ids.tolist()
    return [TokenLogprob(t, lp, tuple(zip(ids[:n], values[:n])))
            for t, lp, ids, values, n in zip(token_ids, chosen, top_ids, top_values, num_top)]
