"""`switchyard plan --validate`: the published rows (validation.py) and, unless --quick, this machine's rows.

This machine: one `switchyard bench cluster` run (the one-process engine and a 2-group cluster with the
Compiled Graph transport, built-in model, batch 32) measures decode step time and tok/s; the host profile is
measured in the same run (matmul FLOP/s, memory bandwidth, the overheads a layer, an expert hit and a sequence
fitted to one-process decodes at batches 1, 4, 8, 16 and 64, the transport's round trip), and the model predicts
both setups' step time. Then the simulator, on that profile, predicts `switchyard bench autoscale`'s setup served
over HTTP, measured in the same run (validate_served.py). Tolerance 25%. Exits 1 when any row misses.
"""

from __future__ import annotations

import json
import sys

from switchyard.cluster.planning.validation import format_rows, published_rows

HOST_TOLERANCE = 0.25
BATCH = 32


def host_rows(log) -> list[dict]:
    from switchyard.cluster.bench.cluster import Setup, run
    from switchyard.cluster.planning.host import base_profile, with_overhead, with_transports
    from switchyard.cluster.planning.host_measure import (NEW_TOKENS, PROMPT_TOKENS, calibration_steps_s,
                                                          decode_step_s, demo_shape)
    from switchyard.cluster.planning.performance import Deployment, decode_step
    from switchyard.cluster.bench.autoscale import DEFAULT_TEXT
    from switchyard.cluster.planning.validate_served import served_rows
    from switchyard.configs.defaults import DEMO_MODEL_DIR

    shape = demo_shape()
    # The one process runs on 2 torch threads; in the cluster the router and each group replica run on one
    # (`bench cluster`'s setup): each setup is predicted with the host measured as it runs
    setup = Setup(2, "compiled", 1)
    profiles = {}
    for threads in sorted({2, setup.router_threads}):
        log(f"calibrating the host's overheads on {threads} thread{'s' if threads > 1 else ''} ...")
        profiles[threads] = with_overhead(base_profile(0.0, threads), shape, calibration_steps_s(threads))
    single_ms = 1000 * decode_step_s(BATCH)  # the median of three, as the calibration's
    rows = run(DEMO_MODEL_DIR, BATCH, NEW_TOKENS, PROMPT_TOKENS, [setup], log)
    (_, _, _, in_process_ms, _, _), (_, cluster_tok, cluster_ms, trip_ms, fan_out, _) = rows
    router = with_transports(profiles[setup.router_threads], in_process_ms, {"ray-compiled": trip_ms})
    context = PROMPT_TOKENS + NEW_TOKENS // 2
    setups = [("this machine: one process, batch 32", profiles[2], Deployment("single", 1, BATCH, context),
               single_ms, 1000 * BATCH / single_ms),
              ("this machine: 2 groups, compiled graph, batch 32", router,
               Deployment("groups", 1, BATCH, context, "ray-compiled", 2, fan_out=fan_out), cluster_ms, cluster_tok)]
    out = []
    for label, profile, d, measured_ms, measured_tok in setups:
        step = decode_step(shape, profile, d)
        for unit, measured, predicted in (("decode ms per step", measured_ms, 1000 * step.step_s),
                                          ("decode tok/s", measured_tok, step.tokens_per_s)):
            error = predicted / measured - 1.0
            out.append({"row": f"{label} ({unit})", "measured": measured, "predicted": predicted, "unit": unit,
                        "error": error, "tolerance": HOST_TOLERANCE, "ok": abs(error) <= HOST_TOLERANCE,
                        "source": "measured in this run (switchyard bench cluster)", "notes": ""})
    out += served_rows(DEMO_MODEL_DIR, DEFAULT_TEXT, shape, router, fan_out, HOST_TOLERANCE, log)
    for threads, p in profiles.items():
        log(f"host on {threads} thread(s): {p.layer_overhead_s * 1e3:.2f} ms a layer, {p.expert_overhead_s * 1e3:.3f} "
            f"ms an expert hit, {p.sequence_overhead_s * 1e3:.3f} ms a sequence")
    log(f"compiled graph: {router.transport('ray-compiled').latency_s * 1e3:.2f} ms a round trip beyond the experts")
    return out


def run_validate(args) -> int:
    rows = published_rows()
    if not args.quick:
        rows += host_rows(lambda s: print(s, file=sys.stderr))
    print(json.dumps(rows, indent=1) if args.json else format_rows(rows))
    return 0 if all(r["ok"] for r in rows) else 1
