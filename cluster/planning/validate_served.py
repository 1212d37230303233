"""`switchyard plan --validate`'s served rows: the simulator against `switchyard bench autoscale`'s setup.

Measured: the bench's setup with each of the 2 groups fixed at one replica (router and replicas on one torch
thread, Compiled Graph transport), serving its prose phase over HTTP to 16 streaming clients that each send the
next request when one finishes, 32 greedy tokens a request (`cluster/bench/autoscale.py`'s own code).

Simulated: the same deployment and load in the simulator (a closed workload of 16 clients, the prompts' mean
length in tokens, 32 output tokens, the phase's length), on the host profile calibrated in the same run (one
thread, the compiled graph's measured round trip). The router prefills in line with its decodes on this machine
(`prefill_on_router`), as the engine's chunked prefill does.

Compared: output tokens per second (tokens of the requests that finished inside the phase, on both sides), and
inter-token latency as aiperf defines it, (last token - first token) / (tokens - 1) of a request: measured, the
median over requests; simulated, its mean (decode steps and the in-line prefills they waited for, over the
steps), which a steady closed loop makes alike for every request.
"""

from __future__ import annotations

import statistics
from pathlib import Path

PHASE_S, STREAMS, MAX_TOKENS = 30.0, 16, 32
PROMPTS = 32


def measure_served(model: Path, text: Path, log) -> dict:
    """bench autoscale's setup fixed at one replica a group, its prose phase measured; and the prompts' length."""
    import ray
    from ray import serve

    from switchyard.cluster.bench.autoscale import app_config, run_setup
    from switchyard.cluster.bench.autoscale_results import Phase
    from switchyard.cluster.bench.shifting_load import prose_prompts
    from switchyard.cluster.cli.serve import free_port
    from switchyard.router.tokenizer import Tokenizer

    prompts = prose_prompts(text, PROMPTS)
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    port = free_port("127.0.0.1")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        config = app_config(model, None, 1, 1, False, None, (1.2, 3.0), transport="compiled")  # as modelled
        [result], _ = run_setup("fixed at 1 (bench autoscale)", config, [Phase("prose", prompts, PHASE_S, STREAMS)],
                                MAX_TOKENS, port, log)
    finally:
        serve.shutdown()
        ray.shutdown()
    if result.errors or not result.itl:
        raise RuntimeError(f"the served run failed: {result.errors} errors, {len(result.itl)} requests measured")
    tokenizer = Tokenizer.from_dir(model)
    return {"tokens_per_s": result.tokens / result.seconds, "itl_s": statistics.median(result.itl),
            "prompt_tokens": round(statistics.mean(len(tokenizer.encode(p)) for p in prompts))}


def simulate_served(shape, profile, fan_out: float, prompt_tokens: int):
    """The simulator configured as the measured setup; returns its SimResult."""
    from switchyard.cluster.planning.performance import Deployment
    from switchyard.cluster.planning.simulator import ScalingSettings, simulate
    from switchyard.cluster.planning.workloads import Workload

    deployment = Deployment("groups", 1, 64, prompt_tokens + MAX_TOKENS // 2, "ray-compiled", 2, fan_out=fan_out)
    workload = Workload("closed", 1.0, PHASE_S, prompt_tokens, MAX_TOKENS, concurrency=STREAMS)
    return simulate(shape, profile, deployment, workload, ScalingSettings(autoscale=False, prefill_on_router=True))


def served_rows(model: Path, text: Path, shape, profile, fan_out: float, tolerance: float, log) -> list[dict]:
    measured = measure_served(model, text, log)
    result = simulate_served(shape, profile, fan_out, measured["prompt_tokens"])
    label = f"this machine: 2 groups served, {STREAMS} streams (bench autoscale, fixed at 1)"
    rows = []
    for unit, value, predicted in (("output tok/s", measured["tokens_per_s"], result.finished_tokens / PHASE_S),
                                   ("ITL ms", 1000 * measured["itl_s"], 1000 * result.itl_mean_s)):
        error = predicted / value - 1.0
        rows.append({"row": f"{label} ({unit})", "measured": value, "predicted": predicted, "unit": unit,
                     "error": error, "tolerance": tolerance, "ok": abs(error) <= tolerance,
                     "source": "measured in this run (switchyard bench autoscale's setup); predicted by the simulator",
                     "notes": f"prompts of {measured['prompt_tokens']} tokens on average"})
    return rows
