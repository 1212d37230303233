"""Sampling parameters (validated) and the sampler: greedy, temperature, top-k, top-p, per-request seed,
OpenAI's presence and frequency penalties, and transformers' (and vLLM's) repetition penalty."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
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
    repetition_penalty: float = 1.0  # divides positive (multiplies negative) logits of prompt and output tokens
    logprobs: int | None = None  # per generated token its logprob and this many top alternatives (router/logprobs.py)
    prompt_logprobs: int | None = None  # the same for every prompt token after the first (for `echo`)

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
        if not self.repetition_penalty > 0.0:
            raise InvalidParameter("repetition_penalty",
                                   f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")
        for name in ("logprobs", "prompt_logprobs"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise InvalidParameter(name, f"{name} must be >= 0, got {getattr(self, name)}")
        if len(self.stop) > 4 or any(not isinstance(s, str) or not s for s in self.stop):
            raise InvalidParameter("stop", "stop must be up to 4 non-empty strings")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def penalised(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0 or self.repetition_penalty != 1.0


def apply_penalties(logits: torch.Tensor, params: list[SamplingParams], outputs: list[list[int]],
                    prompts: list[list[int]] | None = None) -> torch.Tensor:
    """The penalties of each row's params on logits [B, V]; rows without them are untouched, and a batch
    without any is returned as is (no copy).

    - repetition_penalty, as transformers' RepetitionPenaltyLogitsProcessor and vLLM: every token seen so far,
      in the prompt or the output, has its logit divided by the penalty if positive, multiplied if negative;
    - OpenAI's penalties, on the generated tokens only (as OpenAI and vLLM):
      logit -= frequency_penalty * count + presence_penalty * (count > 0)."""
    rows = [row for row, p in enumerate(params) if p.penalised]
    if not rows:
        return logits
    # Batched over rows, touching only the seen tokens: a per-row loop of small indexing ops cost a few ms a
    # step at batch 64 (the built-in model's generation_config.json turns repetition_penalty on for every
    # request). A clone: the caller's logits stay the raw ones (logprobs are taken from them).
    logits = logits.clone()
    flat = logits.view(-1)
    vocab = logits.shape[1]
    repeat = [row for row in rows if params[row].repetition_penalty != 1.0]
    keys, _ = _seen_keys(repeat, [[*(prompts[row] if prompts else ()), *outputs[row]] for row in repeat], vocab,
                         logits.device)
    if keys is not None:
        penalty = torch.tensor([p.repetition_penalty for p in params], dtype=logits.dtype,
                               device=logits.device)[keys // vocab]
        scores = flat[keys]  # a token seen twice is one key: penalised once
        flat[keys] = torch.where(scores < 0, scores * penalty, scores / penalty)
    openai = [row for row in rows if params[row].frequency_penalty or params[row].presence_penalty]
    keys, counts = _seen_keys(openai, [outputs[row] for row in openai], vocab, logits.device)
    if keys is not None:
        row_of = keys // vocab
        frequency, presence = (torch.tensor([getattr(p, name) for p in params], dtype=logits.dtype,
                                            device=logits.device)[row_of]
                               for name in ("frequency_penalty", "presence_penalty"))
        flat[keys] -= frequency * counts + presence
    return logits


def _seen_keys(rows: list[int], tokens: list[list[int]], vocab: int,
               device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The distinct row * vocab + token of each row's tokens (flat indices into [B, V]) and how often each
    occurs, on `device`; (None, None) if there are none. Worked out on the host, where the token lists are."""
    lengths = [len(t) for t in tokens]
    if not sum(lengths):
        return None, None
    keys = (torch.repeat_interleave(torch.tensor(rows), torch.tensor(lengths)) * vocab
            + torch.tensor([token for row_tokens in tokens for token in row_tokens]))
    keys, counts = torch.unique(keys, return_counts=True)
    return keys.to(device), counts.to(device)


def sample(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None],
           outputs: list[list[int]] | None = None, prompts: list[list[int]] | None = None) -> torch.Tensor:
    """logits [B, V] float32 → next token ids [B]. `outputs`, `prompts`: each row's generated and prompt token
    ids, for the penalties (the prompt only counts for repetition_penalty).

    Greedy rows take the argmax. The others are sampled together, not row by row (a per-row loop of small ops
    costs more than the model's step at large batches): scaled by temperature, cut by top-k and top-p in one
    sort, then drawn by inverse transform: one uniform number per row, looked up in the row's cumulative
    probabilities (one random number a row, not one per vocabulary entry). A row with a seed draws it from its
    own generator, so its tokens do not depend on the rest of the batch.
    """
    if outputs is not None:
        logits = apply_penalties(logits, params, outputs, prompts)
    rows = [row for row, p in enumerate(params) if not p.greedy]
    device = logits.device
    next_ids = logits.argmax(dim=-1) if len(rows) < len(params) else \
        torch.empty(len(params), dtype=torch.long, device=device)
    if not rows:
        return next_ids
    picked = [params[row] for row in rows]
    temperature = torch.tensor([p.temperature for p in picked], dtype=logits.dtype).to(device)
    scores = logits[rows] / temperature[:, None]  # [R, V]
    if any(p.top_k or p.top_p < 1.0 for p in picked):
        scores = _top_k_top_p(scores, picked)
    cumulative = torch.softmax(scores, dim=-1).cumsum_(dim=-1)  # [R, V]
    # drawn on the host, from host generators: a seed gives the same numbers on every device
    uniform = torch.rand(len(rows), 1)  # [R, 1]
    for i, row in enumerate(rows):
        if generators[row] is not None:
            uniform[i] = torch.rand(1, generator=generators[row])
    uniform = uniform.to(device)
    # the first token whose cumulative probability passes u (clamped: rounding may leave the total just under 1)
    drawn = torch.searchsorted(cumulative, uniform * cumulative[:, -1:], right=True).squeeze(1)
    next_ids[torch.tensor(rows, device=device)] = drawn.clamp_(max=logits.shape[1] - 1)
    return next_ids


def _top_k_top_p(scores: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Scores [R, V] with the tokens outside each row's top-k, and past its top-p mass, set to -inf.

    The kept tokens of a row are its best ones, down to the score of the last token the cut keeps: only the
    sorted scores are needed, not where each came from, so nothing is scattered back. (A token tied with that
    last one is kept too; a sort would keep whichever of the tied came first.)"""
    vocab = scores.shape[1]
    descending = _sorted_descending(scores.float())  # [R, V]
    device = scores.device
    top_k = torch.tensor([p.top_k or vocab for p in params], device=device)[:, None]  # [R, 1]
    top_p = torch.tensor([p.top_p for p in params], dtype=descending.dtype, device=device)[:, None]
    if any(p.top_k for p in params):  # top-p's mass is over the top-k tokens
        descending = descending.masked_fill(torch.arange(vocab, device=device)[None, :] >= top_k, float("-inf"))
    mass = torch.softmax(descending, dim=-1).cumsum_(dim=-1)  # [R, V] of the best 1, 2, ... tokens
    # a token stays while the mass before it is below top_p: the best token, and one more for each prefix whose
    # mass is below top_p (top_p 1 keeps every token: float rounding can bring the mass to 1 before the last one)
    by_p = torch.where(top_p < 1.0, 1 + torch.searchsorted(mass, top_p), vocab)
    kept = torch.minimum(torch.minimum(by_p, top_k), torch.full_like(top_k, vocab))  # [R, 1] a prefix of the sort
    lowest_kept = descending.gather(1, kept - 1)  # [R, 1]
    return scores.masked_fill(scores.float() < lowest_kept, float("-inf"))


def _sorted_descending(scores: torch.Tensor) -> torch.Tensor:
    """Each row's scores, best first. On the CPU numpy sorts the values alone, about 7x faster than torch.sort,
    which sorts their indices too (64 rows of 8,192: 3 against 21 ms on 2 cores)."""
    if scores.device.type == "cpu":  # sorted negated: ascending, so no reversed copy
        return torch.from_numpy(np.sort(np.negative(scores.numpy()), axis=-1)).neg_()
    return torch.sort(scores, dim=-1, descending=True).values
