"""The served load's shape on the engine alone: N closed-loop streams, each finished request replaced at once.

    python scripts/engine_closed_loop.py [--streams 64] [--prompt-len 50] [--max-tokens 64] [--seconds 20]

aiperf's closed loop at 64 streams keeps new prompts arriving while the others decode, so most steps are
mixed (decodes plus a prefill). `generate()` over one batch never shows that; this does, without HTTP or
the load tool. The streams start staggered (stream i's first request stops after i + 1 tokens), as they are
after a while under load. Prints output tok/s, the mean step and the share of mixed steps.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from switchyard.configs.defaults import resolve_model
from switchyard.configs.engine import EngineConfig
from switchyard.router.engine import Engine
from switchyard.router.generation_config import load_sampling_defaults, sampling_params


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model folder (default: the built-in demo model)")
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=50, help="prompt tokens (aiperf's 32 words in the chat template)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (switchyard serve's default on 2 cores)")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    path = resolve_model(args.model)
    engine = Engine.from_pretrained(path, EngineConfig(max_num_seqs=args.streams,
                                                       max_model_len=args.prompt_len + args.max_tokens + 8))
    defaults = load_sampling_defaults(path)  # what a served request without sampling fields gets
    rng = random.Random(0)
    vocab = engine.model.config.vocab_size

    def submit(max_tokens: int) -> None:
        engine.add_request([rng.randrange(5, vocab) for _ in range(args.prompt_len)],
                           sampling_params(defaults, max_tokens=max_tokens, ignore_eos=True))

    for i in range(args.streams):
        submit(i + 1)
    tokens = steps = mixed = 0
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        outputs = engine.step()
        mixed += engine.last_step is not None and engine.last_step.kind == "mixed"
        steps += 1
        for output in outputs:
            tokens += 1
            if output.finished:
                submit(args.max_tokens)
    elapsed = time.perf_counter() - start
    print(f"{args.streams} streams, {args.prompt_len}-token prompts, {args.max_tokens} out, {args.threads} thread(s): "
          f"{tokens / elapsed:.0f} output tok/s, {1000 * elapsed / steps:.1f} ms a step, "
          f"{mixed / steps:.0%} of {steps} steps mixed")


if __name__ == "__main__":
    main()
