"""A random Mixtral-shaped checkpoint, written by transformers' own class, with the built-in model's tokenizer.

    python scripts/make_random_checkpoint.py OUT_DIR [--device cuda] [--layers 12 --hidden 1024 ...]

The defaults make ~1B parameters (12 layers of 8 experts, top-2, hidden 1024, expert width 3072, 16 heads of
64 with 4 KV heads, the built-in model's 8,192-token vocabulary), in bfloat16: 1.9 GB. Random weights: fit for
serving and for decode speed, not for text. `--device cuda` initialises on the GPU (seconds instead of a minute
of CPU). Tests make their tiny checkpoints the same way (tests/tiny_models.py).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

TOKENIZER_FROM = Path(__file__).resolve().parents[1] / "configs" / "demo-model"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def mixtral_config(layers: int, hidden: int, intermediate: int, experts: int, top_k: int, heads: int,
                   kv_heads: int, vocab: int, max_positions: int):
    from transformers import MixtralConfig

    if hidden % heads:
        raise SystemExit(f"--hidden {hidden} must be a multiple of --heads {heads}")
    if heads % kv_heads:
        raise SystemExit(f"--heads {heads} must be a multiple of --kv-heads {kv_heads}")
    if not 1 <= top_k <= experts:
        raise SystemExit(f"--top-k must be in [1, --experts {experts}], got {top_k}")
    # the built-in model's special ids: <|pad|> 0, <|startoftext|> 1, <|endoftext|> 2
    return MixtralConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         head_dim=hidden // heads, num_local_experts=experts, num_experts_per_tok=top_k,
                         max_position_embeddings=max_positions, sliding_window=None, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)


def tokenizer_vocab() -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(TOKENIZER_FROM / "tokenizer.json")).get_vocab_size()


def make(out: Path, config, dtype: torch.dtype, device: str, seed: int) -> int:
    """Write the checkpoint; returns its parameter count."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    count = sum(p.numel() for p in model.parameters())
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # one tensor per expert, as released checkpoints
    for name in TOKENIZER_FILES:
        shutil.copy(TOKENIZER_FROM / name, out / name)
    return count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder to write (created)")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--intermediate", type=int, default=3072, help="each expert's width")
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--max-positions", type=int, default=4096)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu", help="where to initialise the weights (cpu, cuda)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite OUT_DIR if it holds a checkpoint")
    args = p.parse_args(argv)
    if (args.out / "config.json").exists() and not args.force:
        print(f"{args.out} already holds a checkpoint (--force to overwrite)", file=sys.stderr)
        return 0
    config = mixtral_config(args.layers, args.hidden, args.intermediate, args.experts, args.top_k, args.heads,
                            args.kv_heads, tokenizer_vocab(), args.max_positions)
    start = time.perf_counter()
    count = make(args.out, config, getattr(torch, args.dtype), args.device, args.seed)
    print(f"wrote {args.out}: Mixtral-shaped, {count / 1e9:.3f}B parameters, {args.dtype}, "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
