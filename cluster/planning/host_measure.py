"""Small measurements on this machine's one-process engine that the host profile and its validation need."""

from __future__ import annotations

import time

from switchyard.cluster.planning.model_shape import load_shape
from switchyard.configs.defaults import DEMO_MODEL_DIR


def demo_shape():
    return load_shape(DEMO_MODEL_DIR)


CALIBRATION_BATCHES = (1, 8)  # the host overheads are measured here; validation checks batch 32, 4x beyond


def decode_step_s(batch: int = 1, max_tokens: int = 24, threads: int = 2) -> float:
    """Mean decode step of the built-in model at `batch` sequences (what the host overheads are measured from)."""
    import torch

    from switchyard.cluster.bench.decode import decode_summary, greedy
    from switchyard.cluster.bench.engine import random_prompts
    from switchyard.configs.engine import EngineConfig
    from switchyard.experts.checkpoint import Checkpoint
    from switchyard.router.engine import Engine

    torch.set_num_threads(threads)
    prompts = random_prompts(batch, 32, Checkpoint.open(DEMO_MODEL_DIR).config.vocab_size)
    engine = Engine.from_pretrained(DEMO_MODEL_DIR, EngineConfig(max_num_seqs=batch, max_model_len=128))
    engine.generate(prompts, greedy(4))
    engine.step_log.clear()
    start = time.perf_counter()
    engine.generate(prompts, greedy(max_tokens))
    return decode_summary(list(engine.step_log), time.perf_counter() - start)["decode_ms_per_step"] / 1000.0


def calibration_steps_s() -> dict[int, float]:
    """Decode step seconds at each calibration batch."""
    return {batch: decode_step_s(batch) for batch in CALIBRATION_BATCHES}
