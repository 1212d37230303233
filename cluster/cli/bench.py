"""`switchyard bench`: benchmarks that compare side by side in one run and print a table.

Each benchmark in cluster/bench/ registers its own subcommand (`register(benchmarks)`, handler `main(args)`).
"""

from __future__ import annotations

from switchyard.cluster.bench import (affinity, autoscale, cluster, engine, experts, faults, kv_cache, otel, replace,
                                      round_trip, sampling, serve, tracing)

BENCHMARKS = (engine, cluster, round_trip, serve, autoscale, affinity, replace, faults, tracing, sampling, kv_cache, otel,
              experts)


def register(sub, engine_flags) -> None:
    bench = sub.add_parser("bench", help="benchmarks (side by side, in one run)")
    benchmarks = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for benchmark in BENCHMARKS:
        benchmark.register(benchmarks)
