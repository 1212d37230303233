"""`switchyard plan`: the capacity planner, the serving simulator and their validation, from the command line.

    switchyard plan [--model deepseek-v3|CONFIG] [--hardware H100|PROFILE.json] [--traces FILE | --skew S]
                    [--tokens-per-s N] [--itl-ms MS] [--ttft-s S] [--plot out.png] [--simulate day|shift] [--json]
    switchyard plan --validate [--quick]
    switchyard plan --measure-host -o host.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from switchyard.cluster.planning.hardware import resolve_profile
from switchyard.cluster.planning.model_shape import load_shape, reference_model
from switchyard.cluster.planning.routing import RoutingSource, TraceRouting
from switchyard.cluster.planning.search import (DEFAULT_BATCHES, DEFAULT_EP_SIZES, DEFAULT_GROUPS,
                                                DEFAULT_MICRO_BATCHES, DEFAULT_REPLICAS, Target, cheapest,
                                                expert_parallel_plans, group_plans)


def _shape(model: str):
    from pathlib import Path

    return load_shape(model if Path(model).exists() else reference_model(model))


def _routing(args, shape) -> RoutingSource:
    return RoutingSource(shape.num_experts, shape.top_k, args.skew, TraceRouting(args.traces) if args.traces else None)


def search_all(args, shape, hw, target, source: RoutingSource):
    routing = source.routing
    transports = args.transport or [t for t in ("nvlink", "rdma", "ray-compiled", "ray-actor", "serve-handle")
                                     if t in hw.transports]
    kw = dict(groups=DEFAULT_GROUPS, batches=DEFAULT_BATCHES, micro_batches=DEFAULT_MICRO_BATCHES,
              transports=transports, replicas=DEFAULT_REPLICAS, placement=args.placement)
    wide = replace(target, tokens_per_s=2 * target.tokens_per_s)  # every size within the ITL, for the plot
    found = {
        "switchyard": group_plans(shape, hw, target, routing, **kw),
        "switchyard, coalesced group calls": [p for p in group_plans(shape, hw, target, routing, **kw,
                                                                     coalesce=True)],
        "expert parallel": expert_parallel_plans(shape, hw, target, routing, DEFAULT_EP_SIZES, DEFAULT_BATCHES,
                                                 DEFAULT_MICRO_BATCHES, redundant_experts=shape.num_experts // 8),
    }
    if args.plot:
        found["_plot"] = {
            "switchyard": group_plans(shape, hw, wide, routing, **kw, every_size=True),
            "switchyard, coalesced calls": group_plans(shape, hw, wide, routing, **kw, coalesce=True, every_size=True),
            "expert parallel": expert_parallel_plans(shape, hw, wide, routing, DEFAULT_EP_SIZES, DEFAULT_BATCHES,
                                                     DEFAULT_MICRO_BATCHES, redundant_experts=shape.num_experts // 8,
                                                     every_size=True)}
    return found


def _pool_profile(text: str):
    """`L40S` or `L40S=1.20` (its price per GPU-hour)."""
    name, _, price = text.partition("=")
    try:
        return resolve_profile(name, float(price) if price else None)
    except ValueError:
        raise SystemExit(f"--pool-hardware {text!r}: a profile, or PROFILE=PRICE") from None


def with_pools(args, shape, hw, source: RoutingSource, plan) -> dict:
    """The plan's JSON, a groups plan's with its hot/cold pools (cluster/planning/pools.py)."""
    out = plan.to_json()
    if plan.deployment.layout == "groups":
        from switchyard.cluster.planning.hardware import BUILTIN_PROFILES
        from switchyard.cluster.planning.pools import cheaper_profiles, recommend_pools

        candidates = ([hw] + [_pool_profile(text) for text in args.pool_hardware] if args.pool_hardware
                      else cheaper_profiles(hw, BUILTIN_PROFILES))
        shares, origin = source.shares(plan.deployment.num_groups, plan.placement)
        out["pools"] = recommend_pools(shape, hw, plan.deployment, shares, candidates, origin)
    return out


def transport_floor(shape, hw, target) -> list[dict]:
    """Per transport: the fixed trips alone, per token (every MoE layer pays one), against the ITL target."""
    out = []
    for name, t in sorted(hw.transports.items(), key=lambda kv: kv[1].latency_s):
        floor = shape.num_moe_layers * t.latency_s
        out.append({"transport": name, "round_trip_ms": 1000 * t.latency_s, "trips_per_token_ms": 1000 * floor,
                    "fits_itl": floor < target.itl_p95_s})
    return out


def run_plan(args) -> int:
    try:
        return _run_plan(args)
    except ValueError as err:  # a profile or model that does not fit, a measurement the machine's load spoiled
        print(f"switchyard plan: {err}", file=sys.stderr)
        return 2


def _run_plan(args) -> int:
    if args.validate:
        from switchyard.cluster.planning.validate_command import run_validate

        return run_validate(args)
    if args.measure_host:
        from switchyard.cluster.planning.host import measure_host

        profile = measure_host(args.price or 0.0, log=lambda s: print(s, file=sys.stderr))
        profile.save(args.output)
        print(json.dumps(profile.to_json(), indent=1) if args.json else f"wrote {args.output}")
        return 0
    shape = _shape(args.model)
    hw = resolve_profile(args.hardware, args.price)
    target = Target(args.tokens_per_s, args.itl_ms / 1000.0, args.ttft_s, args.context, args.prompt)
    source = _routing(args, shape)
    found = search_all(args, shape, hw, target, source)
    report = {"model": shape.name, "hardware": hw.name, "hardware_source": hw.source,
              "target": target.__dict__, "transports": transport_floor(shape, hw, target),
              "plans": {k: [with_pools(args, shape, hw, source, p) for p in cheapest(v, args.top)]
                        for k, v in found.items() if not k.startswith("_")}}
    if args.plot:
        from switchyard.cluster.planning.pareto import plot_pareto

        series = {label: [(p.tokens_per_s, p.dollars_per_hour) for p in plans]
                  for label, plans in found["_plot"].items()}
        plot_pareto(series, args.plot, f"{shape.name} on {hw.name}: every plan within p95 ITL "
                                       f"{args.itl_ms:g} ms and TTFT {args.ttft_s:g} s")
        report["plot"] = str(args.plot)
    if args.simulate == "shift":  # forecast-led against reactive scaling (cluster/planning/shift.py)
        from switchyard.cluster.planning.shift import CASES, compare_shift, ramp_sweep

        pool = found["switchyard, coalesced group calls"] if args.simulate_coalesced else found["switchyard"]
        best = cheapest(pool, 1)
        report["shift"] = [compare_shift(shape, hw, best[0], case) for case in CASES] if best else None
        report["ramp_sweep"] = ramp_sweep(shape, hw, best[0], known=tuple(report["shift"])) if best else None
    elif args.simulate:
        from switchyard.cluster.planning.day_cycle import compare_day

        pool = found["switchyard, coalesced group calls"] if args.simulate_coalesced else found["switchyard"]
        best = cheapest(pool, 1)
        report["simulation"] = compare_day(shape, hw, best[0], args.simulate, args.sim_hours, trough=args.trough,
                                           bounds=args.saving_bounds) if best else None
    if args.json:
        print(json.dumps(report, indent=1, default=float))
    else:
        from switchyard.cluster.planning.report import print_report

        print_report(report)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plan", help="plan a cluster for a MoE model: GPUs, groups, replicas, cost",
                              description="Search deployments of a MoE model that meet a target (tok/s, ITL, "
                                          "TTFT), cheapest first, with a performance model validated by "
                                          "--validate; simulate a day of serving with the real autoscaler.")
    p.add_argument("--model", default="deepseek-v3",
                   help="a config.json, a model folder, or a shipped reference: deepseek-v3, qwen3-235b-a22b, "
                        "mixtral-8x22b (default deepseek-v3)")
    p.add_argument("--hardware", default="H100", help="H100, H200, H800, A100, L40S, or a profile JSON "
                                                       "(--measure-host writes this machine's)")
    p.add_argument("--price", type=float, default=None, help="dollars per device-hour (overrides the profile)")
    p.add_argument("--traces", default=None, help="routing traces (Parquet) to measure fan-out and imbalance on")
    p.add_argument("--placement", choices=("affinity", "eplb"), default="affinity",
                   help="the groups' placement whose fan-out and imbalance the traces give (default affinity)")
    p.add_argument("--skew", type=float, default=0.0, help="Zipf skew of expert popularity when no traces apply")
    p.add_argument("--tokens-per-s", type=float, default=100_000.0, help="target output tokens/s (total)")
    p.add_argument("--itl-ms", type=float, default=50.0, help="target p95 inter-token latency, ms")
    p.add_argument("--ttft-s", type=float, default=5.0, help="target time to first token, s")
    p.add_argument("--context", type=int, default=2048, help="mean KV length while decoding, tokens")
    p.add_argument("--prompt", type=int, default=2000, help="prompt length for the TTFT estimate, tokens")
    p.add_argument("--transport", action="append", default=None,
                   help="restrict the search to this transport (repeatable): nvlink, rdma, ray-compiled, ...")
    p.add_argument("--pool-hardware", action="append", default=None,
                   help="hardware for a cold pool of the less loaded groups (repeatable); default: every built-in "
                        "profile cheaper per GPU-hour than --hardware; NAME=PRICE sets its price. --hardware "
                        "itself (fewer replicas for the cold groups) is always tried")
    p.add_argument("--top", type=int, default=5, help="plans to print per layout")
    p.add_argument("--plot", default=None, help="write the throughput-against-cost Pareto plot (PNG) here")
    p.add_argument("--simulate", choices=("steady", "bursty", "day", "shift"), default=None,
                   help="simulate the cheapest Switchyard plan autoscaled against fixed at peak; shift: "
                        "forecast-led against reactive scaling when another group turns hot (at once, with a "
                        "burst, or over a ramp of minutes, and over ramps of several lengths)")
    p.add_argument("--simulate-coalesced", action="store_true",
                   help="simulate the cheapest plan with coalesced group calls instead")
    p.add_argument("--trough", type=float, default=0.25,
                   help="the day's lowest rate (or the rate outside a burst) as a fraction of the peak")
    p.add_argument("--saving-bounds", action="store_true",
                   help="with --simulate: also what limits the saving (delays, hysteresis, pools that cannot scale, "
                        "the day's shape), a simulation per brake taken off")
    p.add_argument("--sim-hours", type=float, default=24.0, help="simulated hours (--simulate)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--validate", action="store_true",
                   help="check the model against published systems and a measurement on this machine")
    p.add_argument("--quick", action="store_true", help="with --validate: the published rows only")
    p.add_argument("--measure-host", action="store_true", help="measure this machine into a hardware profile")
    p.add_argument("-o", "--output", default="host-profile.json", help="where --measure-host writes")
    p.set_defaults(func=run_plan)
