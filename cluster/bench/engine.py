"""Single-process engine against transformers' `generate`, same checkpoint, same prompts, one run."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from switchyard.configs.engine import EngineConfig
from switchyard.router.engine import Engine
from switchyard.router.sampling import SamplingParams


@dataclass
class EngineBenchRow:
    batch: int
    transformers_tok_s: float  # decode: batch * (N - 1) / (T(N) - T(1))
    switchyard_tok_s: float
    transformers_end_to_end_tok_s: float  # batch * N / T(N), prefill included
    switchyard_end_to_end_tok_s: float
    tokens_match: bool

    @property
    def ratio(self) -> float:
        return self.switchyard_tok_s / self.transformers_tok_s


def random_prompts(batch: int, prompt_len: int, vocab: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    # lengths vary ±25% so that batching handles ragged prompts, as in serving
    lengths = torch.randint(max(1, prompt_len * 3 // 4), prompt_len * 5 // 4 + 1, (batch,), generator=gen)
    return [torch.randint(3, vocab, (int(n),), generator=gen).tolist() for n in lengths]


def transformers_generate(model, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=0)
    return out[:, width:].tolist()


def run(model_path: Path, batches: list[int], new_tokens: int, prompt_len: int, log=print) -> list[EngineBenchRow]:
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    reference.generation_config.eos_token_id = None  # both sides generate exactly new_tokens
    engine = Engine.from_pretrained(model_path, EngineConfig(max_num_seqs=max(batches),
                                                             max_model_len=prompt_len * 2 + new_tokens + 8))
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    vocab = engine.model.config.vocab_size
    warm = random_prompts(2, 8, vocab, seed=99)
    transformers_generate(reference, warm, 4)
    engine.generate(warm, SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))

    def timed(fn):
        start = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - start

    one = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
    rows = []
    for batch in batches:
        prompts = random_prompts(batch, prompt_len, vocab)
        log(f"batch {batch}: transformers generate ...")
        _, hf_prefill = timed(lambda: transformers_generate(reference, prompts, 1))
        expected, hf_total = timed(lambda: transformers_generate(reference, prompts, new_tokens))
        log(f"batch {batch}: switchyard ...")
        _, ours_prefill = timed(lambda: engine.generate(prompts, one))
        outputs, ours_total = timed(lambda: engine.generate(prompts, params))
        match = [list(o.token_ids) for o in outputs] == expected
        decode_tokens = batch * (new_tokens - 1)
        rows.append(EngineBenchRow(batch, decode_tokens / (hf_total - hf_prefill),
                                   decode_tokens / (ours_total - ours_prefill), batch * new_tokens / hf_total,
                                   batch * new_tokens / ours_total, match))
    return rows


def log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
