"""Token-adaptive routing: routed-expert computations saved against perplexity, on held-out text.

Every setting runs the engine's own forward (teacher forcing: `forward_step(..., all_logits=True)` with the
setting's `AdaptiveRouting`), so what is measured is the serving option itself. Saved = the share of
(token, routed expert) computations dropped against top-k; shared experts and dense layers are not counted.

    python scripts/adaptive_routing_eval.py --model path/to/hf-moe-folder
    python scripts/adaptive_routing_eval.py --text ../shared/data/corpus/wiki-sample.txt --text-from 0.9

Prints one row per setting, then, for each mode, the value that saves `--target-saving` (found by bisection)
and what it costs in perplexity.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from switchyard.configs.defaults import resolve_model
from switchyard.configs.engine import AdaptiveRouting, EngineConfig
from switchyard.router.batch import StepBatch
from switchyard.router.engine import Engine
from switchyard.router.expert_backend import forward_step
from switchyard.router.gates import Routing

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEXT = REPO.parent / "shared" / "data" / "corpus" / "lee-background.txt"
THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
CUMULATIVE = (0.95, 0.9, 0.85, 0.8, 0.7)


class ExpertCounter:
    """A routing observer: counts the (token, expert) computations actually dispatched."""

    def __init__(self) -> None:
        self.computed = 0
        self.token_layers = 0

    def observe(self, layer: int, batch: StepBatch, routing: Routing) -> None:
        self.computed += int((routing.expert_ids >= 0).sum())
        self.token_layers += routing.expert_ids.shape[0]


@dataclass
class Result:
    label: str
    experts_per_token: float
    saved: float  # share of top-k computations dropped
    perplexity: float


def evaluate(engine: Engine, windows: list[list[int]], batch_size: int, policy: AdaptiveRouting | None) -> Result:
    counter = ExpertCounter()
    nll, count = 0.0, 0
    with torch.inference_mode():
        for lo in range(0, len(windows), batch_size):
            chunk = windows[lo:lo + batch_size]
            batch = StepBatch.scratch_prefill(chunk, engine.cache)
            logits = forward_step(engine.model, engine.experts, engine.cache, batch, counter, all_logits=True,
                                  adaptive=policy)  # [T, V]
            start = 0
            for tokens in chunk:  # position i predicts token i + 1
                n = len(tokens)
                targets = torch.tensor(tokens[1:])
                nll += float(F.cross_entropy(logits[start:start + n - 1], targets, reduction="sum"))
                count += n - 1
                start += n
    per_token = counter.computed / counter.token_layers
    return Result(describe(policy), per_token, 1 - per_token / engine.model.config.top_k, math.exp(nll / count))


def describe(policy: AdaptiveRouting | None) -> str:
    if policy is None:
        return "top-k (off)"
    name = {"threshold": "share >=", "cumulative": "cumulative p"}[policy.mode]
    extra = "" if policy.renormalize else ", not renormalised"
    floor = "" if policy.min_experts == 1 else f", min {policy.min_experts}"
    return f"{name} {policy.value:.3g}{floor}{extra}"


def bisect(engine, windows, batch_size, mode: str, target: float, renormalize: bool, min_experts: int,
           steps: int = 10) -> Result:
    """The value of `mode` whose saving is closest to `target` (saving grows with a threshold, falls with p)."""
    lo, hi = 0.0, 1.0
    best = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        result = evaluate(engine, windows, batch_size, AdaptiveRouting(mode, mid, min_experts, renormalize))
        if best is None or abs(result.saved - target) < abs(best.saved - target):
            best = result
        saves_more = result.saved > target
        if (mode == "threshold") == saves_more:
            hi = mid
        else:
            lo = mid
    return best


def print_table(results: list[Result], base: Result) -> None:
    print(f"| {'setting':<40} | experts/token | % saved | perplexity | Δ perplexity     |")
    print(f"|{'-' * 42}|---------------|---------|------------|------------------|")
    for r in results:
        delta = r.perplexity - base.perplexity
        print(f"| {r.label:<40} | {r.experts_per_token:13.3f} | {100 * r.saved:6.1f}% | {r.perplexity:10.3f} | "
              f"{delta:+7.3f} ({100 * delta / base.perplexity:+.1f}%) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="Hugging Face model folder (default: the built-in demo model)")
    parser.add_argument("--text", default=str(DEFAULT_TEXT), help="held-out text")
    parser.add_argument("--text-from", type=float, default=0.0,
                        help="start at this fraction of the text (e.g. 0.9: the last tenth of wiki-sample.txt)")
    parser.add_argument("--tokens", type=int, default=16384, help="tokens evaluated")
    parser.add_argument("--window", type=int, default=256, help="tokens per teacher-forced sequence")
    parser.add_argument("--batch", type=int, default=8, help="sequences per forward")
    parser.add_argument("--thresholds", type=float, nargs="*", default=THRESHOLDS)
    parser.add_argument("--cumulative", type=float, nargs="*", default=CUMULATIVE)
    parser.add_argument("--min-experts", type=int, default=1)
    parser.add_argument("--no-renormalize-rows", action="store_true",
                        help="skip the rows that do not renormalise the kept weights")
    parser.add_argument("--target-saving", type=float, default=0.175,
                        help="find each mode's value that saves this share of expert computations (0 = skip)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    config = EngineConfig(max_num_seqs=args.batch, max_model_len=args.window, dtype=args.dtype,
                          num_threads=args.threads)
    path = resolve_model(args.model)
    engine = Engine.from_pretrained(path, config)
    if engine.tokenizer is None:
        raise SystemExit(f"{path}: no tokenizer.json; the eval needs one to tokenise the text")
    text = Path(args.text).read_text()
    text = text[int(len(text) * args.text_from):]
    ids = engine.tokenizer.encode(text[:args.tokens * 12])  # enough characters for the tokens asked for
    windows = [ids[i:i + args.window] for i in range(0, min(len(ids), args.tokens) - 1, args.window)]
    windows = [w for w in windows if len(w) > 1]
    cfg = engine.model.config
    print(f"model: {path} ({cfg.family}, {cfg.num_experts} experts, top-{cfg.top_k}, {len(cfg.moe_layers)} MoE layers)")
    print(f"text: {args.text} from {args.text_from:.0%}, {sum(map(len, windows))} tokens in windows of {args.window}\n")

    base = evaluate(engine, windows, args.batch, None)
    renorm = (True,) if args.no_renormalize_rows else (True, False)
    policies = [AdaptiveRouting(mode, v, args.min_experts, r) for r in renorm
                for mode, values in (("threshold", args.thresholds), ("cumulative", args.cumulative)) for v in values]
    results = [base] + [evaluate(engine, windows, args.batch, p) for p in policies]
    print_table(results, base)

    if args.target_saving > 0:
        print(f"\nsettings that save ~{100 * args.target_saving:.1f}% of routed-expert computations:")
        found = [bisect(engine, windows, args.batch, mode, args.target_saving, r, args.min_experts)
                 for r in renorm for mode in ("threshold", "cumulative")]
        print_table(found, base)


if __name__ == "__main__":
    main()
