"""Sampling parameters (validated) and the sampler: greedy, temperature, top-k, top-p, per-request seed, and
OpenAI's presence and frequency penalties."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class InvalidParameter(ValueError):
    """A request parameter out of range; `param` names it (for the OpenAI error body)."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = field(default=())
    presence_penalty: float = 0.0  # subtracted once from the logit of every token already generated
    frequency_penalty: float = 0.0  # subtracted per time a token was already generated

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise InvalidParameter("max_tokens", f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not 0.0 <= self.temperature <= 2.0:
            raise InvalidParameter("temperature", f"temperature must be in [0, 2], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidParameter("top_p", f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InvalidParameter("top_k", f"top_k must be >= 0, got {self.top_k}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise InvalidParameter(name, f"{name} must be in [-2, 2], got {getattr(self, name)}")
        if len(self.stop) > 4 or any(not isinstance(s, str) or not s for s in self.stop):
            raise InvalidParameter("stop", "stop must be up to 4 non-empty strings")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def penalised(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


def apply_penalties(logits: torch.Tensor, params: list[SamplingParams], outputs: list[list[int]]) -> torch.Tensor:
    """OpenAI's penalties on the tokens each sequence has generated so far (not its prompt, as in OpenAI and
    vLLM): logit -= frequency_penalty * count + presence_penalty * (count > 0). Rows without them are untouched,
    and a batch without any is returned as is (no copy)."""
    rows = [row for row, p in enumerate(params) if p.penalised and outputs[row]]
    if not rows:
        return logits
    logits = logits.clone()
    for row in rows:
        p = params[row]
        counts = torch.bincount(torch.tensor(outputs[row]), minlength=logits.shape[1])[: logits.shape[1]]
        logits[row] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0)
    return logits


def sample(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None],
           outputs: list[list[int]] | None = None) -> torch.Tensor:
    """logits [B, V] float32 → next token ids [B]. Greedy rows take the argmax, in one op for all of them.
    `outputs`: each row's generated token ids, for the penalties."""
    if outputs is not None:
        logits = apply_penalties(logits, params, outputs)
    next_ids = logits.argmax(dim=-1)
    for row, (p, gen) in enumerate(zip(params, generators)):
        if p.greedy:
            continue
        scores = logits[row] / p.temperature  # [V]
        if p.top_k:
            kth = torch.topk(scores, min(p.top_k, scores.numel())).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if p.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True)
            probs = torch.softmax(sorted_scores, dim=-1)
            # drop a token once the mass before it already reaches top_p (the first token always stays)
            drop = (torch.cumsum(probs, dim=-1) - probs) >= p.top_p
            scores = scores.scatter(0, order[drop], float("-inf"))
        next_ids[row] = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=gen)[0]
    return next_ids
