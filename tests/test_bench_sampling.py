"""`switchyard bench sampling`: its repetition measures on hand-made sequences, its pick, and a run end to end on a
tiny checkpoint (the numbers themselves are not checked)."""

import math

from tiny_models import TEXT

from switchyard.cluster.bench import sampling
from switchyard.cluster.bench.sampling import Scores, distinct_ngrams, pick, repeated_ngram_share


def test_repeated_4grams_and_distinct_2():
    assert repeated_ngram_share([[1, 2, 3, 4, 5, 6]]) == 0.0
    # 1 2 3 4 | 1 2 3 4: 5 four-grams, the last one repeats the first
    assert repeated_ngram_share([[1, 2, 3, 4, 1, 2, 3, 4]]) == 1 / 5
    assert repeated_ngram_share([[1, 2, 3, 4], [1, 2, 3, 4]]) == 0.0  # across sequences is not repetition
    assert distinct_ngrams([[1, 2, 1, 2]]) == 2 / 3
    assert distinct_ngrams([[1, 2], [1, 2]]) == 1 / 2


def scores(label, perplexity, repeated, distinct) -> Scores:
    return Scores(label, {}, perplexity, repeated, distinct, 100, "")


def test_pick_is_the_lowest_perplexity_that_repeats_like_the_reference():
    reference = scores("reference", 300.0, 0.005, 0.95)
    loops = scores("greedy", 8.0, 0.5, 0.4)
    same_everywhere = scores("greedy + penalty", 12.0, 0.0, 0.6)  # no loops, but the same text for every prompt
    fluent = scores("T 0.8", 60.0, 0.01, 0.9)
    random = scores("T 1", 250.0, 0.0, 0.97)
    assert pick([reference, loops, same_everywhere, fluent, random]) is fluent


def test_bench_sampling_runs_on_a_tiny_checkpoint(checkpoints, tmp_path):
    text = tmp_path / "held-out.txt"
    text.write_text(TEXT)
    grid = [{"temperature": 0.0, "top_p": 1.0}, {"temperature": 1.0, "top_p": 0.9, "repetition_penalty": 1.2}]
    results = sampling.run(checkpoints["qwen3_moe"], [text], 0.0, 4, 6, 8, grid, 4, log=lambda _: None)
    assert [r.label for r in results] == ["held-out text (reference)", "greedy", "T 1, top-p 0.9, rep 1.2"]
    assert all(math.isfinite(r.perplexity) and r.perplexity > 1 for r in results)
    assert results[0].tokens == 4 * 8
    headers, rows = sampling.table(results, pick(results))
    assert len(rows) == 3 and sum(row[-1] == "<- chosen" for row in rows) == 1
