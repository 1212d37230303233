"""`switchyard bench sampling`: which sampling settings give a model its best readable text, by measurement.

Prompts are windows of held-out text (text the model was not trained on); every setting continues every
prompt, and each continuation is scored two ways:

- perplexity under the model itself (plain softmax, no penalty, no temperature): how likely the model finds
  its own text. Lower reads more fluently, but greedy loops score lowest of all, so on its own it rewards them;
- repetition: the share of the continuation's 4-grams that already occurred earlier in it (seq-rep-4, Welleck
  et al. 2019), and distinct-2 over all continuations (unique bigrams / bigrams) for variety across prompts.

The held-out text's own continuation of each prompt is the reference row. The pick: the lowest perplexity among
the settings that repeat themselves about as little as that text does (repeated 4-grams at most 0.01 above its
share, distinct-2 at least 90% of its value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from switchyard.cluster.bench.table import format_table
from switchyard.configs.engine import EngineConfig
from switchyard.router.batch import StepBatch
from switchyard.router.engine import Engine
from switchyard.router.expert_backend import forward_step
from switchyard.router.sampling import SamplingParams

# greedy and (temperature, top-p) pairs, each without a penalty, with transformers' and with OpenAI's
TEMPERATURES = ((0.0, 1.0), (0.6, 1.0), (0.8, 0.9), (1.0, 0.9))
PENALTIES = ({}, {"repetition_penalty": 1.2}, {"frequency_penalty": 0.5})
REPETITION_SLACK = 0.01  # repeated-4-gram share allowed above the reference text's
VARIETY_SHARE = 0.9  # distinct-2 kept of the reference text's


def default_grid() -> list[dict]:
    return [{"temperature": t, "top_p": p, **penalty} for t, p in TEMPERATURES for penalty in PENALTIES]


def describe(setting: dict) -> str:
    if setting is None:
        return "held-out text (reference)"
    parts = ["greedy" if setting["temperature"] == 0 else f"T {setting['temperature']:g}"]
    parts += [f"{short} {setting[key]:g}" for key, short in (("top_p", "top-p"), ("top_k", "top-k"),
              ("repetition_penalty", "rep"), ("frequency_penalty", "freq"), ("presence_penalty", "pres"))
              if key in setting and not (key == "top_p" and setting[key] == 1.0)]
    return ", ".join(parts)


@dataclass
class Scores:
    label: str
    setting: dict | None
    perplexity: float
    repeated_4grams: float
    distinct_2: float
    tokens: int
    sample: str


def held_out_windows(tokenizer, texts: list[Path], text_from: float, length: int, count: int) -> list[list[int]]:
    """`count` windows of `length` tokens, spread evenly over the part of each text from `text_from` on."""
    per_text = []
    for path in texts:
        text = path.read_text()
        ids = tokenizer.encode(text[int(len(text) * text_from):])
        per_text.append([ids[i:i + length] for i in range(0, len(ids) - length + 1, length)])
    windows = []
    for i, chunks in enumerate(per_text):  # an even share from each text
        share = count // len(per_text) + (i < count % len(per_text))
        step = max(1, len(chunks) // max(1, share))
        windows += chunks[::step][:share]
    return windows


def continuation_nll(engine: Engine, prompts: list[list[int]], continuations: list[list[int]],
                     batch_size: int) -> tuple[float, int]:
    """Summed negative log-likelihood of each continuation given its prompt, under the model (teacher forcing
    through the engine's own forward), and the number of tokens scored."""
    nll, count = 0.0, 0
    pairs = [(p, c) for p, c in zip(prompts, continuations) if c]
    with torch.inference_mode():
        for lo in range(0, len(pairs), batch_size):
            chunk = pairs[lo:lo + batch_size]
            sequences = [p + c for p, c in chunk]
            batch = StepBatch.scratch_prefill(sequences, engine.cache)
            logits = forward_step(engine.model, engine.experts, engine.cache, batch, None, all_logits=True)  # [T, V]
            start = 0
            for prompt, cont in chunk:  # position i predicts token i + 1: the continuation from len(prompt) - 1
                first = start + len(prompt) - 1
                nll += float(F.cross_entropy(logits[first:first + len(cont)], torch.tensor(cont), reduction="sum"))
                count += len(cont)
                start += len(prompt) + len(cont)
    return nll, count


def repeated_ngram_share(sequences: list[list[int]], n: int = 4) -> float:
    """Share of n-grams that already occurred earlier in the same sequence."""
    repeated, total = 0, 0
    for seq in sequences:
        seen = set()
        for i in range(len(seq) - n + 1):
            gram = tuple(seq[i:i + n])
            repeated += gram in seen
            seen.add(gram)
            total += 1
    return repeated / max(1, total)


def distinct_ngrams(sequences: list[list[int]], n: int = 2) -> float:
    grams = [tuple(seq[i:i + n]) for seq in sequences for i in range(len(seq) - n + 1)]
    return len(set(grams)) / max(1, len(grams))


def score(engine: Engine, label: str, setting: dict | None, prompts: list[list[int]],
          continuations: list[list[int]], batch_size: int) -> Scores:
    nll, count = continuation_nll(engine, prompts, continuations, batch_size)
    sample = engine.tokenizer.decode(prompts[0] + continuations[0]) if engine.tokenizer else ""
    return Scores(label, setting, math.exp(nll / max(1, count)), repeated_ngram_share(continuations),
                  distinct_ngrams(continuations), count, " ".join(sample.split()))


def run(model: Path, texts: list[Path], text_from: float, num_prompts: int, prompt_len: int, max_tokens: int,
        grid: list[dict], batch_size: int, log=print) -> list[Scores]:
    config = EngineConfig(max_num_seqs=batch_size, max_model_len=prompt_len + max_tokens + 1)
    engine = Engine.from_pretrained(model, config)
    windows = held_out_windows(engine.tokenizer, texts, text_from, prompt_len + max_tokens, num_prompts)
    prompts = [w[:prompt_len] for w in windows]
    results = [score(engine, describe(None), None, prompts, [w[prompt_len:] for w in windows], batch_size)]
    log(f"{len(prompts)} prompts of {prompt_len} tokens, up to {max_tokens} new tokens each")
    for setting in grid:
        params = [SamplingParams(max_tokens=max_tokens, seed=i, **setting) for i in range(len(prompts))]
        outputs = [list(out.token_ids) for out in engine.generate(prompts, params)]
        results.append(score(engine, describe(setting), setting, prompts, outputs, batch_size))
        log(f"{results[-1].label}: perplexity {results[-1].perplexity:.1f}, "
            f"repeated 4-grams {results[-1].repeated_4grams:.3f}")
    return results


def pick(results: list[Scores]) -> Scores:
    """The lowest perplexity among the settings that repeat about as little as the reference text (the first
    row), within a continuation and across them."""
    reference = results[0]
    candidates = [r for r in results[1:] if r.repeated_4grams <= reference.repeated_4grams + REPETITION_SLACK
                  and r.distinct_2 >= VARIETY_SHARE * reference.distinct_2] or results[1:]
    return min(candidates, key=lambda r: r.perplexity)


def table(results: list[Scores], chosen: Scores) -> tuple[list[str], list[list]]:
    headers = ["setting", "perplexity", "repeated 4-grams", "distinct-2", "tokens", ""]
    rows = [[r.label, r.perplexity, f"{r.repeated_4grams:.3f}", f"{r.distinct_2:.3f}", r.tokens,
             "<- chosen" if r is chosen else ""] for r in results]
    return headers, rows


def register(benchmarks) -> None:
    """Add `switchyard bench sampling` to the `bench` subparsers."""
    p = benchmarks.add_parser("sampling", help="sampling settings by perplexity and repetition on held-out text",
                         description="Continue prompts of held-out text under a grid of sampling settings; print "
                                     "each setting's perplexity under the model and its repetition next to the "
                                     "held-out text's own, and pick the settings for generation_config.json.")
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--text", action="append", default=None,
                   help="held-out text file (repeatable; default: both files of ../shared/data/corpus)")
    p.add_argument("--text-from", type=float, default=0.95,
                   help="use each text from this fraction on (0.95: the demo model's held-out last 5%%)")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=40, help="new tokens per prompt")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=main)


def main(args) -> int:
    import json
    from pathlib import Path

    from switchyard.cluster.bench.engine import log_to_stderr
    from switchyard.configs.defaults import resolve_model

    torch.set_num_threads(args.threads)
    model = resolve_model(args.model)
    corpus = Path(__file__).resolve().parents[3] / "shared" / "data" / "corpus"
    texts = [Path(t) for t in args.text] if args.text else sorted(corpus.glob("*.txt"))
    if not texts:
        raise SystemExit(f"switchyard bench sampling: no text; pass --text FILE (looked in {corpus})")
    print(f"model: {model}; held-out text: {', '.join(str(t) for t in texts)} from {args.text_from:.0%}")
    results = run(model, texts, args.text_from, args.prompts, args.prompt_len, args.max_tokens,
                           default_grid(), args.batch, log_to_stderr)
    chosen = pick(results)
    print(format_table(*table(results, chosen)))
    print(f"\nchosen (lowest perplexity that repeats about as little as the held-out text): {chosen.label}\n"
          f"  generation_config.json: {json.dumps(chosen.setting)}\n  e.g. {chosen.sample}")
    return 0
