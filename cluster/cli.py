"""The `switchyard` command line: `generate`, `serve`, `bench`, `trace`, `affinity`, `place`, `plan`.

Flags follow `vllm serve` where they mean the same thing (cluster/cli_engine.py).
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

from switchyard.cluster import cli_bench, cli_generate, cli_serve, cli_trace
from switchyard.cluster.cli_engine import engine_flags
from switchyard.cluster.planning import command as plan_command
from switchyard.router.affinity import commands as affinity_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchyard", description="Serve Mixture-of-Experts models on Ray.")
    parser.add_argument("--version", action="version", version=f"switchyard {metadata.version('switchyard')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (cli_generate, cli_serve, cli_bench, cli_trace):
        command.register(sub, engine_flags)
    affinity_commands.register(sub)  # `affinity fit|plot|predict`, `place`
    plan_command.register(sub)  # `plan`
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
