"""`switchyard trace`: run text or prompts through the model and write every token's experts at every MoE layer
as a Parquet trace (the layout of `../shared/data/README.md`), for `switchyard affinity fit` and `place`."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path


def register(sub, engine_flags) -> None:
    p = sub.add_parser("trace", help="record routing traces (Parquet) from text or prompts",
                       description="Record the experts chosen for every token at every MoE layer.")
    p.add_argument("prompts", nargs="*", metavar="PROMPT")
    p.add_argument("--text", help="a text file cut into --num-seqs sequences of --seq-len tokens (prompt only)")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--num-seqs", type=int, default=64)
    p.add_argument("--prompts-file", help="one prompt per line; each is generated for --max-tokens")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens to generate per prompt (prompts only)")
    p.add_argument("-o", "--output", required=True, help="the Parquet file to write")
    engine_flags(p)
    p.set_defaults(func=run)


def text_chunks(tokenizer, path: str, seq_len: int, num_seqs: int) -> list[list[int]]:
    """`num_seqs` windows of `seq_len` tokens spread evenly over the text."""
    ids = tokenizer.encode(Path(path).read_text(), add_special_tokens=False)
    if len(ids) < seq_len:
        raise SystemExit(f"{path}: only {len(ids)} tokens, fewer than --seq-len {seq_len}")
    starts = [round(i * (len(ids) - seq_len) / max(1, num_seqs - 1)) for i in range(num_seqs)]
    return [ids[s:s + seq_len] for s in starts]


def run(args) -> int:
    from switchyard.configs.defaults import resolve_model
    from switchyard.cluster.cli.engine_flags import engine_config
    from switchyard.router.engine import Engine
    from switchyard.router.sampling import SamplingParams
    from switchyard.router.trace_recorder import record_generation

    model = resolve_model(args.model)
    engine = Engine.from_pretrained(model, engine_config(args, adaptive_routing=None))
    if args.text:
        prompts, params = text_chunks(engine.tokenizer, args.text, args.seq_len, args.num_seqs), \
            SamplingParams(max_tokens=1, temperature=0.0)
        source = f"switchyard trace --text {args.text} --seq-len {args.seq_len} --num-seqs {args.num_seqs}"
    else:
        prompts = list(args.prompts)
        if args.prompts_file:
            prompts += [line.rstrip("\n") for line in open(args.prompts_file) if line.strip()]
        params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
        source = f"switchyard trace: {len(prompts)} prompts, {args.max_tokens} generated tokens each"
    if not prompts:
        print("switchyard trace: give PROMPTs, --prompts-file or --text", file=sys.stderr)
        return 2
    cfg = engine.model.config
    with tempfile.TemporaryDirectory() as scratch:
        recorder = record_generation(engine, prompts, params, scratch, model.name, source)
        if len(recorder.files) != 1:
            raise RuntimeError(f"expected one trace file, got {len(recorder.files)}")
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(recorder.files[0], args.output)
    tokens = recorder.recorded_rows // max(1, len(cfg.moe_layers))
    print(f"wrote {args.output}: {recorder.recorded_rows} rows ({tokens} tokens x {len(cfg.moe_layers)} MoE layers, "
          f"{len(prompts)} sequences, {cfg.num_experts} experts, top-{cfg.top_k})")
    return 0
