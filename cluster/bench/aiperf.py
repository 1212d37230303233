"""Driving aiperf (the third-party load tool) at one concurrency level, and reading what it measured."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LevelResult:
    """One system at one concurrency in one run (latencies in ms)."""
    system: str
    concurrency: int
    output_tps: float
    ttft_p50: float
    ttft_p99: float
    itl_p50: float
    itl_p99: float
    requests: int
    errors: int


def warmup_requests(concurrency: int, per_stream: int) -> int:
    """Warm-up requests of a level: `per_stream` for each of its streams (at least 4), so that the server has
    run batches of the level's own size before the measurement starts."""
    return max(4, per_stream * concurrency)


def aiperf_command(aiperf: Path, model: str, tokenizer: Path, port: int, concurrency: int, requests: int,
                   warmup: int, input_tokens: int, output_tokens: int, out_dir: Path) -> list[str]:
    """One level: aiperf sends its `warmup` requests at the same concurrency as the measured ones, and leaves
    them out of its export."""
    return [str(aiperf), "profile", "--model", model, "--tokenizer", str(tokenizer),
            "--url", f"http://127.0.0.1:{port}", "--endpoint-type", "chat", "--streaming",
            "--synthetic-input-tokens-mean", str(input_tokens), "--synthetic-input-tokens-stddev", "0",
            "--output-tokens-mean", str(output_tokens), "--output-tokens-stddev", "0",
            "--extra-inputs", "ignore_eos:true", "--concurrency", str(concurrency),
            "--request-count", str(requests), "--warmup-request-count", str(warmup), "--random-seed", "123",
            "--ui-type", "none", "--output-artifact-dir", str(out_dir)]


def read_level(system: str, concurrency: int, path: Path) -> LevelResult:
    """One concurrency level of aiperf's JSON export (latencies in ms)."""
    doc = json.loads(path.read_text())

    def stat(key: str, which: str) -> float:
        value = (doc.get(key) or {}).get(which)
        return float("nan") if value is None else float(value)

    errors = sum(int(e.get("count", 0)) for e in (doc.get("error_summary") or []))
    return LevelResult(system, concurrency, stat("output_token_throughput", "avg"),
                       stat("time_to_first_token", "p50"), stat("time_to_first_token", "p99"),
                       stat("inter_token_latency", "p50"), stat("inter_token_latency", "p99"),
                       int(stat("request_count", "avg")) if doc.get("request_count") else 0, errors)


def level_file(out_dir: Path, concurrency: int) -> Path:
    """aiperf writes a sweep's levels to folders of their own, and a single level to the folder itself."""
    level = out_dir / f"concurrency_{concurrency}" / "profile_export_aiperf.json"
    return level if level.exists() else out_dir / "profile_export_aiperf.json"
