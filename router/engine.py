"""The generation engine: schedule → run the model → sample → postprocess, one step at a time.

The engine is the same in one process and on the cluster's router; only its expert backend differs.
"""

from __future__ import annotations

import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from switchyard.configs.engine import EngineConfig
from switchyard.configs.model import ConfigError
from switchyard.experts.checkpoint import Checkpoint
from switchyard.experts.group import ExpertGroup
from switchyard.router.batch import StepBatch
from switchyard.router.dense_model import DenseModel
from switchyard.router.expert_backend import ExpertBackend, LocalExperts, RoutingObserver, forward_step
from switchyard.router.devices import require_device
from switchyard.router.kv_cache import make_cache, num_blocks_for
from switchyard.router.logprobs import TokenLogprob, token_logprobs
from switchyard.router.sampling import InvalidParameter, SamplingParams, sample
from switchyard.router.scheduler import Scheduler
from switchyard.router.sequence import RequestOutput, Sequence, merge_all
from switchyard.router.step_output import append_text, step_output
from switchyard.router.tokenizer import Tokenizer


@dataclass
class StepStats:
    kind: str
    num_seqs: int
    num_tokens: int
    seconds: float


class Engine:
    def __init__(self, model: DenseModel, experts: ExpertBackend, tokenizer: Tokenizer | None,
                 config: EngineConfig = EngineConfig()):
        cfg = model.config
        if config.max_model_len > model.rope.cos.shape[0]:
            raise ValueError(f"max_model_len {config.max_model_len} exceeds the model's "
                             f"max_position_embeddings {model.rope.cos.shape[0]}")
        adaptive = config.adaptive_routing
        if adaptive is not None and adaptive.min_experts > cfg.top_k:
            raise ConfigError(f"engine field `adaptive_routing.min_experts` ({adaptive.min_experts}) exceeds the "
                              f"model's `num_experts_per_tok` ({cfg.top_k})")
        self.model = model
        self.experts = experts
        self.tokenizer = tokenizer
        self.config = config
        free = None
        if config.gpu_memory_utilization is not None:  # measured now: the weights are on the GPU already
            free = torch.cuda.mem_get_info(model.device)
        self.cache = make_cache(cfg, num_blocks_for(cfg, config, model.dtype, free), config.block_size, model.dtype,
                                model.device)
        self.scheduler = Scheduler(self.cache, config.max_num_seqs, config.max_num_batched_tokens)
        eos = set(cfg.eos_token_ids)
        if tokenizer is not None and tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        self.eos_token_ids = frozenset(eos)
        self.observer: RoutingObserver | None = None
        self.micro_batches = 1  # >1 overlaps one micro-batch's attention with another's expert calls
        self.step_tracer = None  # step_tracer(scheduled) -> a span's context manager or None (tracing on)
        self.last_step: StepStats | None = None
        self.step_log: deque[StepStats] = deque(maxlen=8192)  # recent steps, for metrics and benchmarks
        self._in_step: list[Sequence] = []
        self._by_id: dict[str, Sequence] = {}

    @classmethod
    def from_pretrained(cls, path: str | Path, config: EngineConfig = EngineConfig()) -> "Engine":
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        return cls.from_checkpoint(Checkpoint.open(path), config)

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, config: EngineConfig, experts: ExpertBackend | None = None) -> "Engine":
        """The dense model and tokenizer from `ckpt`; the routed experts from `experts`, or all of them in this
        process when none is given."""
        device = require_device(config.device)  # no GPU where one is asked for: one line, before any weight
        if experts is None:  # first: a missing optional kernel fails before the dense weights are read
            experts = LocalExperts(ExpertGroup.load_all(ckpt, config.torch_dtype, config.expert_kernel, device))
        model = DenseModel.load(ckpt, config.torch_dtype, max_positions=config.max_model_len, device=device)
        return cls(model, experts, Tokenizer.from_dir_if_present(ckpt.path), config)

    # -- requests -----------------------------------------------------------------------------------------
    def add_request(self, prompt: str | list[int], params: SamplingParams, request_id: str | None = None) -> Sequence:
        seq = self.make_sequence(prompt, params, request_id)
        self.enqueue(seq)
        return seq

    def make_sequence(self, prompt: str | list[int], params: SamplingParams, request_id: str | None = None) -> Sequence:
        """Tokenise and validate a request without touching the engine's state (safe from any thread)."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise InvalidParameter("prompt", "this model has no tokenizer; send the prompt as token ids")
            prompt = self.tokenizer.encode(prompt)
        if not prompt:
            raise InvalidParameter("prompt", "the prompt is empty")
        vocab = self.model.config.vocab_size
        if any(not 0 <= t < vocab for t in prompt):
            raise InvalidParameter("prompt", f"prompt token ids must be in [0, {vocab})")
        limit = self.config.max_model_len
        if len(prompt) >= limit:
            raise InvalidParameter("prompt", f"the prompt has {len(prompt)} tokens; this model's context is "
                                   f"{limit} tokens, and at least one must be left to generate")
        seq = Sequence(list(prompt), params)
        if request_id is not None:
            seq.request_id = request_id
        return seq

    def enqueue(self, seq: Sequence) -> None:
        self._by_id[seq.request_id] = seq
        self.scheduler.add(seq)

    def abort(self, request_id: str) -> None:
        seq = self._by_id.pop(request_id, None)
        if seq is not None and not seq.finished:
            seq.finish_reason = "abort"
            self.scheduler.finish(seq)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    # -- one step -----------------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        scheduled = self.scheduler.schedule()
        if scheduled is None:
            return []
        start = time.perf_counter()
        seqs = self._in_step = scheduled.seqs
        batch = self._build_batch(scheduled)
        traced = self.step_tracer(scheduled) if self.step_tracer is not None else None
        with torch.inference_mode(), traced or nullcontext():
            logits = self._run_model(scheduled, batch)  # [B, V]: each sequence's last new token
            sampled, logits = self._ready_to_sample(seqs, logits)
            next_ids = self._sample(sampled, logits)
            logprobs = self._logprobs(sampled, logits, next_ids)
        self._record(scheduled, time.perf_counter() - start)
        outputs = [self._postprocess(seq, token, logprobs.get(i)) for i, (seq, token) in enumerate(zip(sampled, next_ids))]
        # only now: whatever raises before this line leaves the step's sequences half advanced (their cache
        # written, their tokens not), and `fail_step` must end every one of them
        self._in_step = []
        return outputs

    def _build_batch(self, scheduled) -> StepBatch:
        seqs = scheduled.seqs
        return StepBatch.build([s.pending_tokens(n) for s, n in zip(seqs, scheduled.num_new_tokens)],
                               [s.num_cached for s in seqs], [s.blocks for s in seqs], self.cache.block_size,
                               [s.number for s in seqs], self.model.device)

    def _run_model(self, scheduled, batch: StepBatch) -> torch.Tensor:
        """The forward pass over the step's new tokens; the cache then holds them. Returns logits [B, V]."""
        seqs = scheduled.seqs
        # a prompt scored for `echo` needs the logits of all its tokens, not just the last
        scoring = any(s.params.prompt_logprobs is not None and not s.prompt_done for s in seqs)
        logits = forward_step(self.model, self.experts, self.cache, batch, self.observer, all_logits=scoring,
                              micro_batches=self.micro_batches, adaptive=self.config.adaptive_routing)
        if scoring:  # [T, V] → [B, V]
            logits = self._score_prompts(seqs, scheduled.num_new_tokens, batch, logits)
        for seq, n in zip(seqs, scheduled.num_new_tokens):
            seq.num_cached += n
        return logits

    @staticmethod
    def _ready_to_sample(seqs: list[Sequence], logits: torch.Tensor) -> tuple[list[Sequence], torch.Tensor]:
        """A prompt still being prefilled in chunks samples nothing until its last chunk: the sequences that
        sample, and their logits [B', V]."""
        rows = [i for i, s in enumerate(seqs) if s.num_uncached == 0]
        if len(rows) == len(seqs):
            return seqs, logits
        return [seqs[i] for i in rows], logits[rows]

    @staticmethod
    def _sample(sampled: list[Sequence], logits: torch.Tensor) -> list[int]:
        if not sampled:
            return []
        return sample(logits, [s.params for s in sampled], [s.generator for s in sampled],
                      [s.output_ids for s in sampled], [s.prompt_ids for s in sampled]).tolist()

    @staticmethod
    def _logprobs(sampled: list[Sequence], logits: torch.Tensor, next_ids: list[int]) -> dict[int, TokenLogprob]:
        """Row -> logprob of the sampled token (and the top ones), for the sequences that asked."""
        wanted = [i for i, s in enumerate(sampled) if s.params.logprobs is not None]
        if not wanted:  # indexing with an empty list still costs an op every step
            return {}
        return dict(zip(wanted, token_logprobs(logits[wanted], [next_ids[i] for i in wanted],
                                               [sampled[i].params.logprobs for i in wanted])))

    def _record(self, scheduled, seconds: float) -> None:
        self.last_step = StepStats(scheduled.kind, len(scheduled.seqs), scheduled.num_tokens, seconds)
        self.step_log.append(self.last_step)

    def _score_prompts(self, seqs: list[Sequence], counts: list[int], batch: StepBatch,
                       logits: torch.Tensor) -> torch.Tensor:
        """With the logits [T, V] of every new token: the logprob of each prompt token given those before it,
        for the sequences that asked (`prompt_logprobs`). Returns the logits [B, V] of each last token."""
        rows, targets, num_top, owners = [], [], [], []
        starts = (batch.last_token_index - batch.new_lens + 1).tolist()
        for seq, n, start in zip(seqs, counts, starts):
            k = seq.params.prompt_logprobs
            if k is None or seq.prompt_done:
                continue
            if not seq.prompt_logprobs:
                seq.prompt_logprobs.append(None)  # the first token has nothing before it
            next_entry = len(seq.prompt_logprobs)  # a preempted sequence recomputes positions it has scored
            for j in range(n):  # the logits at position p score the token at p + 1
                position = seq.num_cached + j
                if position + 1 < len(seq.prompt_ids) and position + 1 == next_entry:
                    next_entry += 1
                    rows.append(start + j)
                    targets.append(seq.prompt_ids[position + 1])
                    num_top.append(k)
                    owners.append(seq)
        for seq, entry in zip(owners, token_logprobs(logits[rows], targets, num_top)):
            seq.prompt_logprobs.append(entry)
        return logits[batch.last_token_index]

    def fail_step(self, message: str) -> list[RequestOutput]:
        """After `step` raised: end the sequences of that step with an error (those that finished in it too: their
        last output is lost); the rest run on."""
        outputs = []
        for seq in self._in_step:
            seq.finish_reason, seq.error, seq.finish_time = "error", message, time.perf_counter()
            self.scheduler.finish(seq)
            self._by_id.pop(seq.request_id, None)
            outputs.append(step_output(seq))
        self._in_step = []
        return outputs

    def _postprocess(self, seq: Sequence, token: int, logprob: TokenLogprob | None = None) -> RequestOutput:
        now = time.perf_counter()
        if seq.first_token_time is None:
            seq.first_token_time = now
        params = seq.params
        if token in self.eos_token_ids and not params.ignore_eos or token in params.stop_token_ids:
            seq.finish_reason = "stop"
        else:
            seq.output_ids.append(token)
            if logprob is not None:
                seq.logprobs.append(logprob)
        if not seq.finished and (len(seq.output_ids) >= params.max_tokens or seq.total_len >= self.config.max_model_len):
            seq.finish_reason = "length"
        append_text(seq, self.tokenizer)
        if seq.finished:
            seq.finish_time = now
            self.scheduler.finish(seq)
            self._by_id.pop(seq.request_id, None)
        return step_output(seq)

    # -- offline ------------------------------------------------------------------------------------------
    def generate(self, prompts: list[str | list[int]], params: SamplingParams | list[SamplingParams],
                 on_step=None) -> list[RequestOutput]:
        """Run `prompts` to completion together; results in prompt order. `on_step(outputs)` sees each step."""
        per_prompt = params if isinstance(params, list) else [params] * len(prompts)
        seqs = [self.add_request(p, sp) for p, sp in zip(prompts, per_prompt)]
        final: dict[str, RequestOutput] = {}
        earlier: dict[str, list[RequestOutput]] = {}  # each request's outputs so far (their logprobs are deltas)
        while len(final) < len(seqs):
            outputs = self.step()
            if on_step is not None:
                on_step(outputs)
            for out in outputs:
                earlier.setdefault(out.request_id, []).append(out)
                if out.finished:
                    final[out.request_id] = merge_all(earlier.pop(out.request_id))
        return [final[s.request_id] for s in seqs]
