"""`switchyard generate`: run prompts through the single-process engine."""

from __future__ import annotations

import json
import sys
import time

from switchyard.configs.defaults import resolve_model
from switchyard.cluster.cli.engine_flags import engine_config
from switchyard.configs.model import ConfigError
from switchyard.router.generation_config import load_sampling_defaults, sampling_params
from switchyard.router.sampling import InvalidParameter


def register(sub, engine_flags) -> None:
    p = sub.add_parser("generate", help="generate text for prompts in this process",
                       description="Generate continuations of PROMPTs (and/or lines of --prompts-file).")
    p.add_argument("prompts", nargs="*", metavar="PROMPT")
    p.add_argument("--prompts-file", help="a file with one prompt per line")
    engine_flags(p)
    p.add_argument("--max-tokens", type=int, default=64)
    # sampling flags left out take the model's generation_config.json, else greedy
    p.add_argument("--temperature", type=float, default=None,
                   help="0 = greedy; default: the model's generation_config.json, else 0")
    p.add_argument("--top-p", type=float, default=None, help="default: generation_config.json, else 1")
    p.add_argument("--top-k", type=int, default=None, help="0 = off; default: generation_config.json, else 0")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--presence-penalty", type=float, default=None, help="OpenAI's, in [-2, 2]")
    p.add_argument("--frequency-penalty", type=float, default=None, help="OpenAI's, in [-2, 2]; e.g. 0.5 against loops")
    p.add_argument("--repetition-penalty", type=float, default=None,
                   help="transformers' and vLLM's, > 0 (1 = off; 1.1-1.3 against loops)")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--chat", action="store_true", help="wrap each prompt in the model's chat template")
    p.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    p.set_defaults(func=run)


def run(args) -> int:
    from switchyard.router.engine import Engine

    prompts = list(args.prompts)
    if args.prompts_file:
        with open(args.prompts_file) as f:
            prompts += [line.rstrip("\n") for line in f if line.strip()]
    if not prompts:
        print("switchyard generate: give at least one PROMPT or --prompts-file", file=sys.stderr)
        return 2
    model = resolve_model(args.model)
    try:
        defaults = {"temperature": 0.0, **load_sampling_defaults(model)}
        params = sampling_params(defaults, max_tokens=args.max_tokens, temperature=args.temperature,
                                 top_p=args.top_p, top_k=args.top_k, seed=args.seed, stop=tuple(args.stop),
                                 presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                                 repetition_penalty=args.repetition_penalty)
    except ConfigError as err:
        print(f"switchyard generate: {err}", file=sys.stderr)
        return 2
    except InvalidParameter as err:
        print(f"switchyard generate: --{err.param.replace('_', '-')}: {err}", file=sys.stderr)
        return 2
    try:
        engine = Engine.from_pretrained(model, engine_config(args))
    except ConfigError as err:  # a bad engine flag, --device cuda without a GPU, vllm not installed
        print(f"switchyard generate: {err}", file=sys.stderr)
        return 2
    texts = prompts
    if args.chat:
        texts = [engine.tokenizer.apply_chat_template([{"role": "user", "content": p}]) for p in prompts]

    live = sys.stdout.isatty() and not args.json and len(prompts) == 1
    progress = sys.stderr.isatty() and not live
    if live:
        print(prompts[0], end="", flush=True)
    state = {"tokens": 0, "done": 0}
    start = time.perf_counter()

    def on_step(outputs) -> None:
        state["tokens"] += len(outputs)
        state["done"] += sum(o.finished for o in outputs)
        if live:
            print("".join(o.delta_text for o in outputs), end="", flush=True)
        elif progress:
            rate = state["tokens"] / (time.perf_counter() - start)
            print(f"\r{state['done']}/{len(prompts)} prompts done, {state['tokens']} tokens, {rate:.0f} tok/s",
                  end="", file=sys.stderr, flush=True)

    try:
        outputs = engine.generate(texts, params, on_step=on_step)
    except InvalidParameter as err:
        print(f"switchyard generate: {err}", file=sys.stderr)
        return 2
    if progress:
        print(file=sys.stderr)
    if live:
        print()
        return 0
    for prompt, out in zip(prompts, outputs):
        if args.json:
            print(json.dumps({
                "prompt": prompt, "text": out.text, "token_ids": list(out.token_ids),
                "finish_reason": out.finish_reason, "prompt_tokens": out.prompt_tokens,
                "completion_tokens": len(out.token_ids),
                "time_to_first_token_s": round(out.time_to_first_token or 0.0, 6),
                "latency_s": round(out.latency or 0.0, 6)}))
        else:
            print(f"{prompt}{out.text}\n")
    return 0
