"""Small measurements on this machine's one-process engine that the host profile and its validation need."""

from __future__ import annotations

import statistics

from switchyard.cluster.planning.model_shape import load_shape
from switchyard.configs.defaults import DEMO_MODEL_DIR


def demo_shape():
    return load_shape(DEMO_MODEL_DIR)


# The host overheads are fitted to these batches; the validation checks batch 32, which is left out of them.
CALIBRATION_BATCHES = (1, 4, 8, 16, 64)
PROMPT_TOKENS, NEW_TOKENS = 32, 16  # as `switchyard plan --validate`'s `bench cluster` run
# One decode of 16 tokens varies by about 10% from run to run on 2 cores; the median of three holds steadier.
REPEATS = 3


def decode_step_s(batch: int, repeats: int = REPEATS, threads: int = 2) -> float:
    """The built-in model's mean decode step at `batch` sequences, measured as `switchyard bench cluster` measures
    its one process (the same code): the median of `repeats` runs, each on new random prompts."""
    from switchyard.cluster.bench.cluster import model_len, single_process
    from switchyard.cluster.bench.engine import random_prompts
    from switchyard.experts.checkpoint import Checkpoint

    vocab = Checkpoint.open(DEMO_MODEL_DIR).config.vocab_size
    runs = [single_process(DEMO_MODEL_DIR, random_prompts(batch, PROMPT_TOKENS, vocab), NEW_TOKENS,
                           model_len(PROMPT_TOKENS, NEW_TOKENS), threads, round_trip=False)["decode_ms_per_step"]
            for _ in range(repeats)]
    return statistics.median(runs) / 1000.0


def calibration_steps_s(threads: int = 2) -> dict[int, float]:
    """Decode step seconds at each calibration batch, the engine on `threads` torch threads."""
    return {batch: decode_step_s(batch, threads=threads) for batch in CALIBRATION_BATCHES}
