"""Small measurements on this machine's one-process engine that the host profile and its validation need."""

from __future__ import annotations

import time

from switchyard.cluster.planning.model_shape import load_shape
from switchyard.configs.defaults import DEMO_MODEL_DIR


def demo_shape():
    return load_shape(DEMO_MODEL_DIR)


def batch1_step_s(max_tokens: int = 24, threads: int = 2) -> float:
    """Mean decode step of the built-in model at batch 1 (what the per-layer overhead is measured from)."""
    import torch

    from switchyard.cluster.bench.decode import decode_summary, greedy
    from switchyard.cluster.bench.engine import random_prompts
    from switchyard.configs.engine import EngineConfig
    from switchyard.experts.checkpoint import Checkpoint
    from switchyard.router.engine import Engine

    torch.set_num_threads(threads)
    prompts = random_prompts(1, 32, Checkpoint.open(DEMO_MODEL_DIR).config.vocab_size)
    engine = Engine.from_pretrained(DEMO_MODEL_DIR, EngineConfig(max_num_seqs=1, max_model_len=128))
    engine.generate(prompts, greedy(4))
    engine.step_log.clear()
    start = time.perf_counter()
    engine.generate(prompts, greedy(max_tokens))
    return decode_summary(list(engine.step_log), time.perf_counter() - start)["decode_ms_per_step"] / 1000.0
