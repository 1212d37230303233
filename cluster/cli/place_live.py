"""`switchyard place --live URL`: ask a serving app's router for a placement fitted on its recent routing, show it
against the current one, and with `--apply` switch to it while serving (POST /v1/switchyard/placement)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from switchyard.cluster.api.keys import ENV


def placement_request(args: argparse.Namespace) -> dict:
    body: dict = {"dry_run": not args.apply, "min_gain": None if args.force else args.min_gain}
    if args.explicit_placement:
        with open(args.explicit_placement, encoding="utf-8") as f:
            body["placement"] = json.load(f)
    return body


def format_answer(answer: dict) -> str:
    """The POST's answer as a small table and a verdict line."""
    current, proposed = answer["current"], answer["proposed"]
    rows = [("", "strategy", "fan-out", "imbalance")]
    for name, side in (("current", current), ("proposed", proposed)):
        rows.append((name, str(side.get("strategy")), _number(side.get("fan_out")), _number(side.get("imbalance"))))
    for name, score in (answer.get("candidates") or {}).items():
        rows.append(("  candidate", name, _number(score["fan_out"]), _number(score["imbalance"])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    window = answer.get("window", {})
    scored = answer.get("scored_tokens")
    where = "held-out sequences of" if answer.get("held_out") else "the tokens of"
    head = (f"window: {window.get('tokens', 0)} tokens of recent routing (capacity {window.get('capacity_tokens', 0)})"
            + (f"; scored on {where} {scored} tokens" if scored else ""))
    verdict = f"gain {answer['gain']:.4f}; " if answer.get("gain") is not None else ""
    verdict += answer.get("reason", "")
    if answer.get("applied"):
        switch = answer["switch"]
        verdict += (f"\napplied: version {switch['version']}, {switch['experts_loaded']} experts loaded on "
                    f"{switch['replicas']} replicas; load {switch['load_s']:.2f}s, switch {switch['switch_s']:.3f}s, "
                    f"drop {switch['drop_s']:.2f}s")
    elif answer.get("dry_run"):
        verdict += "\ndry run: nothing applied (--apply to apply)"
    else:
        verdict += "\nnot applied"
    return "\n".join([head, *lines, verdict])


def _number(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def run_live(args: argparse.Namespace) -> int:
    import httpx

    key = args.api_key or os.environ.get(ENV, "").split(",")[0].strip() or None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = args.live.rstrip("/") + "/v1/switchyard/placement"
    try:
        response = httpx.post(url, json=placement_request(args), headers=headers, timeout=args.timeout)
    except httpx.HTTPError as err:
        print(f"switchyard place --live: {url}: {err}", file=sys.stderr)
        return 1
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code != 200 or not isinstance(answer, dict):
        message = answer.get("error", {}).get("message") if isinstance(answer, dict) else response.text[:200]
        print(f"switchyard place --live: HTTP {response.status_code}: {message}", file=sys.stderr)
        return 1
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(answer["placement"])
    if args.json:
        print(json.dumps(answer, indent=1))
    else:
        print(format_answer(answer))
        if args.output:
            print(f"wrote the proposed placement to {args.output}")
    return 0
