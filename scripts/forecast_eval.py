"""How well the router's group-load forecast predicts each request's decode load, on the built-in model.

    python scripts/forecast_eval.py [--model configs/demo-model] [--requests 48] [--max-tokens 32]

Requests are prose from both corpora and number tables, mixed. The affinity matrix (popularity, transition) is
fitted on the routing of other prompts of the same corpora. For every request, its decode routing (the tokens
it generates, greedy) is forecast four ways, as `cluster/autoscaling/forecast.py` does while serving:

    popularity   the layer's popularity alone (what a forecast without the request knows)
    prompt-only  the first MoE layer's gate on the prompt's embeddings, carried by the transition matrix,
                 half blended with popularity (a waiting request, no forward pass)
    prefilled    the prompt's own routing at every layer, blended with popularity as a prior of 8 tokens
                 (a running request)
    oracle picks the decode's own per-layer histogram: what is left is the error of turning expected picks
                 into group rows (visit_probability)

and scored by: recall@k of the top_k experts of each layer (forecast vs the decode's most picked), and the
per-group load error sum_g |forecast - actual| / sum_g actual of batches of 16 requests (rows = tokens that
visit the group at a layer), over 4 contiguous groups and over the bench's two groups (number experts hot).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"


def routed(engine, prompts: list[list[int]], max_tokens: int):
    """Generate; per request: (prompt picks [L, E], prompt tokens, decode picks [L, E], decode tokens,
    decode visits as multi-hot [L, n, E] for exact group rows)."""
    from switchyard.router.affinity.aligned import multi_hot
    from switchyard.router.sampling import SamplingParams
    from switchyard.router.trace_recorder import RoutingWindow, trace_metadata

    cfg = engine.model.config
    window = RoutingWindow(trace_metadata(cfg, "eval"), max_tokens=1 << 22)
    engine.observer = window
    try:
        engine.generate(prompts, SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True))
    finally:
        engine.observer = None
    trace = window.trace()
    seqs = np.unique(trace.seq_id)
    out = []
    for seq, prompt in zip(sorted(seqs), prompts):  # sequence numbers grow in the order requests were added
        rows = trace.seq_id == seq
        aligned = trace.select(rows).aligned()  # [L, T, k] in position order
        hot = multi_hot(aligned.expert_ids, cfg.num_experts)  # [L, T, E]
        n = len(prompt)
        out.append((hot[:, :n].sum(1), n, hot[:, n:].sum(1), hot.shape[1] - n, hot[:, n:]))
    return trace, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "configs" / "demo-model"))
    p.add_argument("--requests", type=int, default=48, help="requests scored (a third each: wiki, news, numbers)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--batch", type=int, default=16, help="requests per batch for the group-load error")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from switchyard.cluster.autoscaling.forecast import (
        blended_picks,
        propagated_picks,
        relative_error,
        rows_per_token,
        top_k_recall,
    )
    from switchyard.cluster.bench.shifting_load import hot_placement, number_prompts, prose_prompts
    from switchyard.cluster.bench.table import format_table
    from switchyard.configs.engine import EngineConfig
    from switchyard.router.affinity.matrix import fit_affinity
    from switchyard.router.affinity.strategies import contiguous
    from switchyard.router.engine import Engine
    from switchyard.router.prompt_forecast import prompt_picks

    engine = Engine.from_pretrained(args.model, EngineConfig(max_num_seqs=64, max_model_len=512))
    cfg, tok = engine.model.config, engine.tokenizer
    third = args.requests // 3
    wiki = prose_prompts(CORPUS / "wiki-sample.txt", 2 * third, chars=200)
    news = prose_prompts(CORPUS / "lee-background.txt", 2 * third, chars=200)
    numbers = number_prompts(2 * third, numbers=30, seed=args.seed)
    fit = [tok.encode(t) for t in wiki[third:] + news[third:] + numbers[third:]]
    scored = [tok.encode(t) for t in wiki[:third] + news[:third] + numbers[:third]]
    print(f"fitting the matrix on {len(fit)} requests, scoring {len(scored)} ({args.max_tokens} tokens each) ...",
          file=sys.stderr)
    fit_trace, fit_routed = routed(engine, fit, args.max_tokens)
    matrix = fit_affinity(fit_trace)
    _, requests = routed(engine, scored, args.max_tokens)

    k, popularity = cfg.top_k, matrix.popularity
    first = prompt_picks(engine.model, scored).numpy().astype(np.float64)  # [R, E]
    prompt_only = 0.5 * (propagated_picks(first, matrix.transition, k) + popularity[None])
    counts = np.stack([r[0] for r in requests])
    tokens = np.array([r[1] for r in requests], np.float64)
    sources = {
        "popularity": np.broadcast_to(popularity, counts.shape),
        "prompt-only": prompt_only,
        "prefilled": blended_picks(counts, tokens, popularity, 8.0),
        "oracle picks": np.stack([r[2] / max(r[3], 1) for r in requests]),
    }
    actual_picks = np.stack([r[2] for r in requests])  # [R, L, E]
    decode_tokens = np.array([r[3] for r in requests], np.float64)

    counts_fit = np.stack([r[2] for r in fit_routed]).sum(0)
    placements = {"4 contiguous groups": contiguous(cfg.moe_layers, cfg.num_experts, 4).holds,
                  "2 groups, number experts hot": hot_placement(counts_fit, cfg.moe_layers, cfg.num_experts // 4).holds}
    order = list(range(len(requests)))
    random.Random(args.seed).shuffle(order)
    batches = [order[i:i + args.batch] for i in range(0, len(order), args.batch)]
    rows = []
    for name, picks in sources.items():
        recall = top_k_recall(picks, actual_picks, k)
        errors = []
        for holds in placements.values():
            forecast = rows_per_token(picks, holds, k) * decode_tokens[:, None]  # [R, G] rows over the decode
            actual = np.stack([(np.einsum("lte,lge->ltg", r[4], holds.astype(np.float64)) > 0).sum((0, 1))
                               for r in requests])  # [R, G] rows the decode really sent
            errors.append(np.mean([relative_error(forecast[b].sum(0), actual[b].sum(0)) for b in batches]))
        rows.append([name, recall, *errors])
    print(f"model: {Path(args.model).name}; {len(scored)} requests (wiki, news, number tables), {args.max_tokens} "
          f"decode tokens each; top_k {k} of {cfg.num_experts}; load error over batches of {args.batch}")
    print(format_table(["forecast", f"recall@{k}", *[f"load error, {p}" for p in placements]], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
