"""The top-k / top-p cut against a row-by-row reference: the same tokens kept, whatever the mix of settings."""

import pytest
import torch

from switchyard.router.sampling import SamplingParams, _top_k_top_p


def reference_kept(row: torch.Tensor, top_k: int, top_p: float) -> set[int]:
    """Tokens a row keeps, as the definitions say: its top-k best (all if 0), then of those, best first, each
    token while the probability mass before it (over the top-k) is below top_p."""
    order = torch.argsort(row, descending=True).tolist()
    if top_k:
        order = order[:top_k]
    probs = torch.softmax(row[order].double(), dim=0).tolist()
    kept, before = [], 0.0
    for token, p in zip(order, probs):
        if top_p < 1.0 and before >= top_p:
            break
        kept.append(token)
        before += p
    return {t for t in kept if torch.isfinite(row[t])}  # a token already at -inf stays out


@pytest.mark.parametrize("seed", range(6))
def test_cut_keeps_the_tokens_the_definitions_keep(seed):
    generator = torch.Generator().manual_seed(seed)
    rows, vocab = 24, 500
    scores = torch.randn(rows, vocab, generator=generator) * (0.5 + 4 * seed)  # flat to peaked distributions
    scores[0, :100] = float("-inf")  # a row that logits processors cut already
    settings = [(k, p) for k in (0, 1, 7, 64, 499) for p in (1.0, 0.95, 0.5, 0.05)]
    params = [SamplingParams(temperature=1.0, top_k=settings[r % len(settings)][0],
                             top_p=settings[r % len(settings)][1]) for r in range(rows)]
    cut = _top_k_top_p(scores, params)
    for r, p in enumerate(params):
        kept = set(torch.isfinite(cut[r]).nonzero().squeeze(1).tolist())
        assert kept == reference_kept(scores[r], p.top_k, p.top_p), (r, p.top_k, p.top_p)
        assert torch.equal(cut[r][list(kept)], scores[r][list(kept)])  # kept scores are untouched


def test_cut_runs_in_bfloat16_and_keeps_the_dtype():
    scores = torch.randn(4, 300).to(torch.bfloat16)
    cut = _top_k_top_p(scores, [SamplingParams(top_p=0.5)] * 4)
    assert cut.dtype == torch.bfloat16 and torch.isfinite(cut).sum(dim=1).min() >= 1
