"""The whole dense forward with every weight, cache and input on the `meta` device (shapes only): a tensor
made on the CPU by mistake anywhere on the path meets a meta tensor and fails with a device mismatch. This is
what keeps the router's GPU path honest on machines without a GPU.

The routed experts stand behind a backend that checks what it is sent is on the device and answers there:
their compute sorts tokens by expert, whose shapes depend on values a meta tensor does not have."""

import pytest
import torch

from switchyard.configs.engine import AdaptiveRouting
from switchyard.experts.checkpoint import Checkpoint
from switchyard.router.batch import StepBatch
from switchyard.router.dense_model import DenseModel
from switchyard.router.expert_backend import forward_step
from switchyard.router.kv_cache import make_cache
from switchyard.router.sampling import SamplingParams, sample
from tiny_models import FAMILIES, VOCAB

META = torch.device("meta")


class ExpertsOnTheDevice:
    def __init__(self):
        self.calls = 0

    def submit(self, layer, hidden, routing):
        for tensor in (hidden, routing.expert_ids, routing.weights):
            assert tensor.device == META, f"layer {layer}: a {tuple(tensor.shape)} tensor on {tensor.device}"
        self.calls += 1
        return torch.zeros_like(hidden)

    def wait(self, pending):
        return pending


def meta_model(path) -> tuple[DenseModel, object]:
    ckpt = Checkpoint.open(path)
    model = DenseModel.load(ckpt, torch.float32, max_positions=64, device=META)
    cache = make_cache(model.config, num_blocks=32, block_size=4, dtype=torch.float32, device=META)
    return model, cache


@pytest.mark.parametrize("family", FAMILIES)
def test_prefill_decode_and_mixed_steps_stay_on_the_device(family, checkpoints):
    model, cache = meta_model(checkpoints[family])
    weights = [model.embed_weight, model.lm_head, model.rope.cos, *vars(model.layers[0].attention).values()]
    assert all(w is None or w.device == META for w in weights)
    experts = ExpertsOnTheDevice()
    tables = [[0, 1, 2], [3, 4], [5, 6, 7, 8]]
    steps = [  # (new tokens, cached) per sequence: a prefill, a decode of all three, a mixed chunked step
        ([[5, 6, 7, 8, 9], [10, 11, 12], [13] * 9], [0, 0, 0]),
        ([[1], [2], [3]], [5, 3, 9]),
        ([[4], [5, 6, 7, 8], [9]], [6, 4, 10]),
    ]
    for tokens, cached in steps:
        batch = StepBatch.build(tokens, cached, tables, cache.block_size, [0, 1, 2], device=META)
        with torch.inference_mode():
            logits = forward_step(model, experts, cache, batch)
            scores = forward_step(model, experts, cache, batch, all_logits=True)
            split = forward_step(model, experts, cache, batch, micro_batches=2,
                                 adaptive=AdaptiveRouting("cumulative", 0.5))
        assert logits.device == scores.device == split.device == META
        assert logits.shape == split.shape == (3, VOCAB) and scores.shape == (sum(map(len, tokens)), VOCAB)
    assert experts.calls > 0


def test_sampling_stays_on_the_device():
    logits = torch.empty(3, VOCAB, device=META)
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=0.7, top_p=0.9, top_k=5, seed=1),
              SamplingParams(temperature=1.0, repetition_penalty=1.2, frequency_penalty=0.5)]
    generators = [None, torch.Generator().manual_seed(1), None]
    with torch.inference_mode():
        ids = sample(logits, params, generators, [[1, 2], [3], [4, 4]], [[5], [6], [7]])
    assert ids.device == META and ids.shape == (3,)
