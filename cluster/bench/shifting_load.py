"""A workload whose routing shifts: prose, then numbers, so that different expert groups are hot in turn.

On the built-in model, number tables route almost every token to four experts per layer, prose spreads over
all of them. `hot_placement` puts each layer's number experts in group 0 and the rest in group 1: numbers
load group 0 alone, prose loads group 1 most. Used by `switchyard bench autoscale` and the autoscaling tests.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from switchyard.router.affinity.placement import Placement


def prose_prompts(text_file: str | Path, count: int, chars: int = 300) -> list[str]:
    """`count` paragraphs of at least `chars` characters from a text file, cut to `chars`."""
    paragraphs = [p.strip() for p in Path(text_file).read_text(errors="replace").split("\n") if len(p.strip()) >= chars]
    if len(paragraphs) < count:
        raise ValueError(f"{text_file}: {len(paragraphs)} paragraphs of {chars}+ characters, {count} wanted")
    return [p[:chars] for p in paragraphs[:count]]


def number_prompts(count: int, numbers: int = 60, seed: int = 0) -> list[str]:
    """`count` lines of random integers (a table of figures)."""
    rng = random.Random(seed)
    return [" ".join(str(rng.randint(0, 99999)) for _ in range(numbers)) for _ in range(count)]


class _RoutingCounter:
    """Engine observer: picks of each expert at each MoE layer."""

    def __init__(self, layers: tuple[int, ...], num_experts: int):
        self.layers = list(layers)
        self.counts = torch.zeros(len(layers), num_experts, dtype=torch.long)  # [L, E]

    def observe(self, layer, batch, routing) -> None:
        ids = routing.expert_ids[routing.expert_ids >= 0]
        self.counts[self.layers.index(layer)] += torch.bincount(ids, minlength=self.counts.shape[1])


def routing_counts(engine, prompts: list, params) -> tuple[np.ndarray, list]:
    """Generate `prompts` on a single-process engine: ([L, E] picks per expert, the outputs)."""
    cfg = engine.model.config
    counter = _RoutingCounter(cfg.moe_layers, cfg.num_experts)
    engine.observer = counter
    try:
        outputs = engine.generate(prompts, params)
    finally:
        engine.observer = None
    return counter.counts.numpy(), outputs


def hot_placement(counts: np.ndarray, layers: tuple[int, ...], hot_per_layer: int) -> Placement:
    """Two groups: group 0 holds each layer's `hot_per_layer` most picked experts in `counts` [L, E], group 1
    the rest."""
    num_layers, num_experts = counts.shape
    holds = np.zeros((num_layers, 2, num_experts), dtype=bool)  # [L, G, E]
    for l in range(num_layers):
        hot = np.argsort(-counts[l], kind="stable")[:hot_per_layer]
        holds[l, 0, hot] = True
        holds[l, 1] = ~holds[l, 0]
    return Placement("hot-experts", tuple(layers), holds)
