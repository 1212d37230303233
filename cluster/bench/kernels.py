"""Which expert kernels a benchmark compares: `--expert-kernel`, and torch plus vLLM's where it is installed."""

from __future__ import annotations

import sys


def kernels_flag(p) -> None:
    p.add_argument("--expert-kernel", action="append", choices=["torch", "vllm"], dest="expert_kernels",
                   help="expert kernels to compare (repeatable; default: torch, and vllm where it is installed)")


def chosen_kernels(args) -> list[str]:
    """The asked-for kernels; by default torch, plus vllm where importable, saying so when it is not. Asking
    for vllm explicitly without it installed fails (VllmUnavailable) rather than quietly measuring less."""
    from switchyard.experts.vllm_kernel import VllmUnavailable, load_ops

    kernels = list(dict.fromkeys(args.expert_kernels or ["torch", "vllm"]))
    if "vllm" in kernels:
        try:
            load_ops()
        except VllmUnavailable as err:
            if args.expert_kernels:
                raise SystemExit(f"switchyard bench: {err}") from err
            print("vllm kernel: not installed, not measured (README: vLLM kernel (optional))", file=sys.stderr)
            kernels.remove("vllm")
    return kernels
