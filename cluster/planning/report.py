"""The text report of `switchyard plan`: the cheapest plans per layout, one step's breakdown, the transports."""

from __future__ import annotations

import json


def _plan_line(p: dict) -> str:
    return (f"  {p['describe']}\n    {p['tokens_per_s']:,.0f} tok/s, ITL {1000 * p['itl_s']:.1f} ms, "
            f"TTFT {p['ttft_s']:.2f} s, {p['devices']} GPUs on {p['nodes']} nodes, ${p['dollars_per_hour']:,.0f}/h, "
            f"${p['dollars_per_million_tokens']:.3f} per 1M tokens")


def _breakdown(step: dict) -> str:
    parts = ("attention_s", "experts_s", "imbalance_s", "dispatch_s", "dense_s", "overhead_s", "overlap_hidden_s")
    cells = ", ".join(f"{k[:-2].replace('_', ' ')} {1000 * step[k]:.1f}" for k in parts)
    return f"    one decode step {1000 * step['step_s']:.1f} ms = {cells} (ms; overlap hidden is subtracted)"


def _ranges(groups: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    out, start = [], None
    for i, g in enumerate(groups):
        if start is None:
            start = g
        if i + 1 == len(groups) or groups[i + 1] != g + 1:
            out.append(str(start) if start == g else f"{start}-{g}")
            start = None
    return ",".join(out)


def _pools(pools: dict) -> list[str]:
    if not pools["recommended"]:
        return [f"    pools: {pools['summary']}"]
    lines = [f"    pools: {pools['summary']}, ${pools['dollars_per_million']:.3f} against "
             f"${pools['baseline']['dollars_per_million']:.3f} per 1M tokens, step "
             f"{1000 * pools['step_s']:.1f} ms (all on {pools['baseline']['hardware']}: "
             f"{1000 * pools['baseline']['step_s']:.1f} ms)"]
    for p in pools["pools"]:
        lines.append(f"      {p['name']:12} {p['hardware']:5} groups {_ranges(p['groups'])} ({p['load_share']:.0%} of "
                     f"the load): {p['replicas']} replicas x {p['gpus_per_replica']} GPU each, "
                     f"${p['dollars_per_hour']:,.2f}/h")
    chosen = pools["pools"][1]["hardware"]
    others = [f"{r['hardware']} {r['cold_groups']} groups at {r['gpus_per_replica']} GPU x {r['replicas']} replicas "
              f"({r['saving']:.1%} less)"
              for r in pools["by_hardware"] if r["hardware"] != chosen and r.get("saving", 0) > 0]
    if others:
        lines.append(f"      the cheapest cold pool on each other candidate: {'; '.join(others)}")
    return lines


def _bounds(b: dict) -> list[str]:
    lines = [f"  what bounds the saving, from {b['base']}:"]
    for r in b["rows"]:
        lines.append(f"    {r['what']:66} {r['device_hours']:8,.0f} GPU-hours ({r['saving']:.1%} fewer), "
                     f"p95 ITL {r['itl_ratio']:.2f}x")
    u = b["unscalable"]
    if u["pools"]:
        lines.append(f"    pools that cannot scale ({', '.join(u['pools'])}): {u['device_hours']:,.0f} GPU-hours, "
                     f"{u['share']:.1%} of fixed at peak, in every hour")
    ideal = ", ".join(f"at {k} {v:.1%}" for k, v in b["perfect_scaler"].items())
    lines.append(f"    a perfect scaler (every pool at load / utilisation, within its bounds) saves {ideal}")
    return lines


def print_report(report: dict) -> None:
    t = report["target"]
    print(f"{report['model']} on {report['hardware']}: target {t['tokens_per_s']:,.0f} tok/s, p95 ITL "
          f"{1000 * t['itl_p95_s']:.0f} ms, TTFT {t['ttft_s']:.1f} s, context {t['context_tokens']} tokens")
    for layout, plans in report["plans"].items():
        print(f"\n{layout}: {len(plans)} cheapest plans meeting the target" if plans
              else f"\n{layout}: no plan meets the target")
        for i, p in enumerate(plans):
            print(_plan_line(p))
            if i == 0:
                print(_breakdown(p["step"]))
            if "pools" in p:
                print("\n".join(_pools(p["pools"])))
    snippet = next((p["pools"]["app_config"] for plans in report["plans"].values() for p in plans
                    if p.get("pools", {}).get("recommended")), None)
    if snippet:
        print(f"\nthe first split as app config (`expert_pools`; add `model`):\n  {json.dumps(snippet)}")
    print("\nper-layer transports: the fixed round trips alone, one per MoE layer and token")
    for row in report["transports"]:
        verdict = "fits" if row["fits_itl"] else "exceeds"
        print(f"  {row['transport']:13} {row['round_trip_ms']:6.2f} ms a trip -> {row['trips_per_token_ms']:7.1f} ms "
              f"a token ({verdict} the ITL target)")
    sim = report.get("simulation")
    if sim:
        f = sim["fixed_at_peak"]
        print(f"\nsimulated {sim['workload']}, plan: {sim['plan']}")
        print(f"  fixed at peak: {f['device_hours']:,.0f} GPU-hours, p95 ITL {1000 * f['itl_p95_s']:.1f} ms, "
              f"${f['dollars_per_million']:.3f} per 1M tokens")
        print(f"  (replica-hours: {f['replica_hours']:,.0f}, {f['router_replica_hours']:,.0f} of routers)")
        for v in sim["variants"]:
            a = v["autoscaled"]
            print(f"  autoscaled, {v['policy']}: {a['device_hours']:,.0f} GPU-hours ({v['saving']:.1%} fewer), "
                  f"p95 ITL {1000 * a['itl_p95_s']:.1f} ms ({v['itl_ratio']:.2f}x), p95 TTFT {a['ttft_p95_s']:.1f} s, "
                  f"${a['dollars_per_million']:.3f} per 1M tokens; {a['replica_hours']:,.0f} replica-hours "
                  f"({v['replica_saving']:.1%} fewer); routers {'-'.join(map(str, a['routers_range']))}, "
                  f"replicas a group {'-'.join(map(str, a['group_replicas_range']))}")
        if sim.get("bounds"):
            print("\n".join(_bounds(sim["bounds"])))
    if report.get("shift"):
        from switchyard.cluster.planning.shift import ramp_table, shift_table

        print("\n" + "\n\n".join(shift_table(case) for case in report["shift"]))
        if report.get("ramp_sweep"):
            print("\n" + ramp_table(report["ramp_sweep"]))
    if report.get("plot"):
        print(f"\nwrote the Pareto plot to {report['plot']}")
