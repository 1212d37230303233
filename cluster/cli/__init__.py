"""The `switchyard` command line: one module a subcommand, mounted by `main.py`."""

from switchyard.cluster.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
