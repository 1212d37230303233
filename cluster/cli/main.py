"""The `switchyard` command line: `generate`, `serve`, `bench`, `trace`, `affinity`, `place`, `plan`.

Flags follow `vllm serve` where they mean the same thing (cluster/cli/engine_flags.py).
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

from switchyard.cluster.cli import affinity, bench, generate, place, plan, serve, trace
from switchyard.cluster.cli.engine_flags import engine_flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchyard", description="Serve Mixture-of-Experts models on Ray.")
    parser.add_argument("--version", action="version", version=f"switchyard {metadata.version('switchyard')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (generate, serve, bench, trace):
        command.register(sub, engine_flags)
    affinity.register(sub)  # `affinity fit|plot|predict`
    place.register(sub)
    plan.register(sub)  # `plan`: the capacity planner (cluster/planning/)
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
