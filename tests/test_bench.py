"""The benchmarks end to end on tiny settings (they run and print their tables; numbers are not checked), and the
method of `switchyard bench serve` as pure functions."""

import json
import re
from pathlib import Path

import pytest

from switchyard.cluster.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_bench_engine_prints_a_side_by_side_table(checkpoints, capsys):
    argv = ["bench", "engine", "--model", str(checkpoints["qwen3_moe"]), "--batch", "1", "--batch", "3",
            "--max-tokens", "5", "--prompt-len", "6", "--threads", "1"]
    assert main(argv) == 0  # float32: every sequence must equal transformers' greedy tokens
    out = capsys.readouterr().out
    assert "transformers tok/s" in out and "torch/transformers" in out
    assert "1/1" in out and "3/3" in out


def test_bench_engine_in_bfloat16_counts_matching_sequences(checkpoints, capsys):
    argv = ["bench", "engine", "--model", str(checkpoints["qwen3_moe"]), "--batch", "2", "--max-tokens", "4",
            "--prompt-len", "6", "--threads", "1", "--dtype", "bfloat16", "--expert-kernel", "torch"]
    assert main(argv) == 0  # lower precision may drift, so it reports rather than fails
    assert "bfloat16" in capsys.readouterr().out


def test_bench_autoscale_workload_makes_number_tables_hot_on_group_0_and_counts_replica_hours():
    import numpy as np

    from switchyard.cluster.bench.autoscale import PhaseResult, phase_rows
    from switchyard.cluster.bench.shifting_load import hot_placement, number_prompts

    counts = np.array([[0, 9, 1, 5], [7, 0, 0, 2]])  # [L, E] picks
    placement = hot_placement(counts, (0, 1), 2)
    assert placement.experts_of_group(0) == {0: [1, 3], 1: [0, 3]}
    assert placement.experts_of_group(1) == {0: [0, 2], 1: [1, 2]}
    assert number_prompts(2) == number_prompts(2) and all(p.replace(" ", "").isdigit() for p in number_prompts(2))
    # 36 s at 1 router + 3 and 1 expert replicas on average: 5 replicas x 0.01 h
    phase = PhaseResult("auto", "numbers", 36.0, replicas=[[3, 1], [3, 1]], tokens=3600, itl=[0.1, 0.2])
    assert abs(phase.replica_hours(1) - 0.05) < 1e-12
    row = phase_rows([phase], prices=(1.0, 2.0))[0]
    # $: 0.01 h x $1 (router) + 0.04 h x $2 = $0.09 for 3600 tokens
    assert abs(row[6] - 0.09 / 3600 * 1e6) < 1e-9 and row[3] == 100.0
    assert phase_rows([phase], prices=(1.0, 0.0))[0][6] == "not priced"


def test_bench_otel_measures_the_three_dispatch_hook_paths():
    from switchyard.cluster.observability import tracing
    from switchyard.cluster.bench import otel

    rows = otel.run(repeats=2000)
    assert [r[0] for r in rows] == ["tracing off", "on, step not sampled", "on, sampled layer (span + carrier + end)"]
    assert rows[2][1] > 0 and not tracing.enabled()  # the process is left as it was: off


def test_bench_kv_cache_runs_all_three_setups_to_the_same_tokens(checkpoints, capsys):
    argv = ["bench", "kv-cache", "--model", str(checkpoints["qwen3_moe"]), "--requests", "6", "--prompt-len", "5",
            "--max-tokens", "14", "--max-model-len", "32", "--full-sequences", "4", "--threads", "1"]
    assert main(argv) == 0  # every setup's greedy tokens equal the first's
    lines = capsys.readouterr().out.splitlines()
    reserved, paged, quarter = (next(line.split() for line in lines if line.startswith(name))
                                for name in ("reserved", "paged  ", "paged,"))
    # columns from the right: most running, preemptions, tok/s, ratio, same tokens
    assert reserved[-5] == "4"  # at most 4 whole sequences fit: 4 at a time
    assert paged[-5] == "6"  # the same bytes in blocks: all 6 at once
    assert int(quarter[-4]) > 0  # a quarter of them: preemptions


def test_bench_serve_interleaves_the_systems_run_by_run():
    import pytest

    from switchyard.cluster.bench.serve_summary import run_order

    assert run_order(["A", "B"], 3) == [(0, "A"), (0, "B"), (1, "A"), (1, "B"), (2, "A"), (2, "B")]
    assert run_order(["A", "B", "C"], 1) == [(0, "A"), (0, "B"), (0, "C")]
    with pytest.raises(ValueError, match="at least 1"):
        run_order(["A"], 0)


def test_bench_serve_summarises_runs_as_median_and_spread_with_ratios_of_medians():
    import math

    from switchyard.cluster.bench.aiperf import LevelResult
    from switchyard.cluster.bench.serve_summary import spread, summary_table

    s = spread([3.0, float("nan"), 1.0, 10.0])  # a NaN is a run that did not measure it
    assert (s.median, s.low, s.high, s.runs) == (3.0, 1.0, 10.0, 3) and str(s) == "3.0 (1.0-10.0)"
    assert s.relative_range == 3.0 and str(spread([float("nan")])) == "-" and math.isnan(spread([]).median)

    def level(system, c, tps, itl, ttft, errors=0):
        return LevelResult(system, c, tps, ttft, 2 * ttft, itl, 2 * itl, 8, errors)

    results = [level("S", 16, 200.0, 40.0, 100.0), level("V", 16, 150.0, 60.0, 300.0),  # run 1
               level("S", 16, 260.0, 30.0, 90.0, errors=1), level("V", 16, 380.0, 20.0, 200.0),  # run 2
               level("S", 16, 220.0, 35.0, 95.0), level("V", 16, 300.0, 25.0, 250.0)]  # run 3
    headers, rows = summary_table(results, reference="V")
    assert headers[:7] == ["system", "concurrency", "runs", "output tok/s", "ITL p50 ms", "TTFT p50 ms", "errors"]
    s_row, v_row = rows
    assert s_row[:7] == ["S", 16, 3, "220.0 (200.0-260.0)", "35.0 (30.0-40.0)", "95.0 (90.0-100.0)", 1]
    assert v_row[3] == "300.0 (150.0-380.0)"
    assert s_row[7:] == ["0.73x", "0.71x"]  # 220 / 300 tok/s; ITL 25 / 35: ratios of the medians, not of one run
    assert v_row[7:] == ["1.00x", "1.00x"]
    assert len(summary_table(results, reference=None)[0]) == 7  # no reference in the run: no ratio columns


def test_bench_serve_judges_the_machine_load_around_a_run():
    import math

    from switchyard.cluster.bench.machine_load import RunLoad, expected_residual, judge, quiet_before

    # the kernel's 1-min load decays as exp(-t / 60 s): a run that left 2.0 still explains 2/e a minute later
    assert expected_residual(None, 10.0) == 0.0
    assert math.isclose(expected_residual(2.0, 60.0), 2.0 / math.e)

    def run(before, expected=0.0, other=0.0):
        return RunLoad(before, 1.8, expected, 60.0, own_cores=1.7, other_cores=other, steal_cores=0.1)

    assert judge(run(0.3)) == []  # quiet: a load the earlier runs explain, nobody else on the CPUs
    assert judge(run(1.4, expected=1.2)) == []  # high load, but this benchmark's previous run left it
    (reason,) = judge(run(1.4, expected=0.5))
    assert "1-min load 1.40" in reason and "0.50 of it from earlier runs" in reason
    (reason,) = judge(run(0.1, other=0.6))
    assert "other processes used 0.60 cores" in reason and "run itself 1.70" in reason
    assert len(judge(run(9.0, other=3.0))) == 2
    assert quiet_before([run(0.3), run(0.9)]) and not quiet_before([run(0.3), run(1.2)]) and not quiet_before([])


def test_bench_serve_meter_counts_a_servers_cpu_as_the_runs_own():
    import subprocess
    import sys
    import time

    from switchyard.cluster.bench.machine_load import RunMeter, tree_cpu_seconds

    meter = RunMeter(previous_load_after=None, previous_end=None)
    meter.start()
    burn = "import time\nwhile time.process_time() < 0.4: pass"
    # a "server" whose child burns 0.4 CPU seconds and exits: the tree counts the children it has reaped
    server = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys, time; "
                               f"subprocess.run([sys.executable, '-c', {burn!r}]); time.sleep(60)"])
    try:
        subprocess.run([sys.executable, "-c", burn], check=True)  # the load tool: a reaped child of the driver
        deadline = time.monotonic() + 60
        while tree_cpu_seconds(server.pid) < 0.4 and time.monotonic() < deadline:
            time.sleep(0.1)
        meter.loaded()
        load = meter.stop(server.pid)
    finally:
        server.kill()
        server.wait()
    assert load.own_cores * load.seconds >= 0.8  # both burns, whatever else ran on the machine meanwhile
    assert load.expected_before == 0.0 and load.other_cores >= 0.0 and load.seconds > 0


FAKE_AIPERF = '''
import argparse, json, pathlib, httpx
p = argparse.ArgumentParser()
for flag in ("--model", "--url", "--concurrency", "--request-count", "--warmup-request-count", "--output-artifact-dir"):
    p.add_argument(flag)
args, _ = p.parse_known_args()
body = {"model": args.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
r = httpx.post(args.url + "/v1/chat/completions", json=body, timeout=120)  # the server really answers
r.raise_for_status()
c = int(args.concurrency)
out = pathlib.Path(args.output_artifact_dir)
out.mkdir(parents=True, exist_ok=True)
export = {"output_token_throughput": {"avg": 10.0 * c}, "time_to_first_token": {"p50": 5.0, "p99": 9.0},
          "inter_token_latency": {"p50": 2.0 * c, "p99": 3.0 * c}, "request_count": {"avg": float(args.request_count)},
          "warmup": int(args.warmup_request_count)}
(out / "profile_export_aiperf.json").write_text(json.dumps(export))
'''


@pytest.mark.slow
def test_bench_serve_runs_each_system_interleaved_and_prints_the_summary(tmp_path, capsys):
    """End to end with a stand-in for aiperf (not installed in CI) that sends one real request and writes an
    export in aiperf's format: two runs of the one-process server, each level its own aiperf run."""
    import sys

    from switchyard.cluster.bench.aiperf import warmup_requests

    fake = tmp_path / "aiperf"
    fake.write_text(f"#!{sys.executable}\n{FAKE_AIPERF}")
    fake.chmod(0o755)
    argv = ["bench", "serve", "--system", "one-process", "--runs", "2", "--concurrency", "1", "--concurrency", "8",
            "--request-count", "3", "--aiperf", str(fake), "--out", str(tmp_path / "out"),
            "--serve-arg=--num-cpus=2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    cells = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()]
    summary = [row for row in cells if row[0] == "Switchyard, one process"]
    assert summary[0][1:6] == ["1", "2", "10.0 (10.0-10.0)", "2.0 (2.0-2.0)", "5.0 (5.0-5.0)"]
    assert summary[1][1:5] == ["8", "2", "80.0 (80.0-80.0)", "16.0 (16.0-16.0)"]
    runs = [row for row in cells if row[0] in ("1", "2") and "10 / 80" in row]
    assert [r[0] for r in runs] == ["1", "2"]  # one row per run, in the order they ran, with the run's load
    assert "machine: " in out
    export = tmp_path / "out" / "run-2" / "switchyard-one-process" / "aiperf-c8" / "profile_export_aiperf.json"
    assert json.loads(export.read_text())["warmup"] == warmup_requests(8, 1) == 8  # warmed up at its concurrency


def test_bench_autoscale_shift_report_reads_serving_crossing_and_time_above_target():
    from switchyard.cluster.bench.autoscale import PhaseResult
    from switchyard.cluster.bench.shift import Sample, shift_report, shift_rows

    # capacity 100 rows/s, target 0.6: one replica's target is 60 rows/s. Group 1 is hot: 50, then 100 rows/s
    # from 1 s on, a second replica in the registry from 2 s on (target 120 rows/s: below it again)
    samples = [Sample(0.0, [1, 1], [0, 0]), Sample(1.0, [1, 1], [5, 50]), Sample(2.0, [1, 2], [10, 150]),
               Sample(3.0, [1, 2], [15, 250])]
    itl_at = [(5.0, 0.1), (20.0, 0.3), (31.0, 9.0)]  # the last finished after the 30 s window
    report = shift_report(samples, itl_at, capacity=100.0, target_utilization=0.6)
    assert report.hot_group == 1 and report.serving_after_s == 2.0 and report.crosses_after_s == 1.0
    assert report.lead_s == -1.0 and report.above_target_s == 1.0
    assert abs(report.p95_itl_s - 0.29) < 1e-9
    phases = [PhaseResult("autoscaled 1-3", "prose", 36.0, replicas=[[1, 1]]),
              PhaseResult("autoscaled 1-3", "numbers", 36.0, replicas=[[1, 2]], samples=samples, itl_at=itl_at),
              PhaseResult("fixed at 1", "numbers", 36.0, replicas=[[1, 1]], samples=samples)]
    (row,) = shift_rows(phases, capacity=100.0)
    assert row[0] == "autoscaled 1-3" and row[1] == "g1" and row[4] == -1.0 and abs(row[-1] - 0.07) < 1e-12


def test_bench_autoscale_ramp_shifts_the_requests_gradually_and_widens_the_itl_window():
    from switchyard.cluster.bench.autoscale_results import Phase
    from switchyard.cluster.bench.shift import Sample, shift_report

    ramp = Phase("numbers", ["n"], 160.0, 16, ramp_from=("p",), ramp_s=100.0)

    def share(elapsed: float) -> float:
        return sum(ramp.prompt(i, elapsed) == "n" for i in range(1000)) / 1000

    assert share(0.0) == 0.0 and share(100.0) == 1.0 and share(150.0) == 1.0
    assert abs(share(25.0) - 0.25) < 0.01 and abs(share(70.0) - 0.7) < 0.01  # linear, spread over the requests
    assert all(Phase("step", ["n"], 10.0, 4).prompt(i, 0.0) == "n" for i in range(8))  # no ramp: a step
    samples = [Sample(0.0, [1, 1], [0, 0]), Sample(1.0, [1, 1], [50, 0])]
    itl_at = [(10.0, 0.1), (120.0, 0.2), (140.0, 0.9)]  # 140 s: after the ramp's 100 s plus 30 s
    assert abs(shift_report(samples, itl_at, 100.0, 0.6, ramp_s=100.0).p95_itl_s - 0.195) < 1e-9
    assert shift_report(samples, itl_at, 100.0, 0.6).p95_itl_s == 0.1  # a step: the 30 s after it


def test_widened_experts_give_the_built_in_models_tokens(tmp_path):
    """scripts/widen_experts.py pads every expert with zeros: the greedy tokens stay the built-in model's."""
    import importlib.util

    from switchyard.configs.engine import EngineConfig
    from switchyard.router.engine import Engine
    from switchyard.router.sampling import SamplingParams

    spec = importlib.util.spec_from_file_location("widen_experts", REPO / "scripts" / "widen_experts.py")
    widen_experts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(widen_experts)
    wide = widen_experts.widen(tmp_path / "wide", 384)
    params = SamplingParams(max_tokens=6, temperature=0.0)
    prompts = ["12 345 6789 101", "The history of the city"]
    tokens = []
    for model in (widen_experts.DEMO, wide):
        engine = Engine.from_pretrained(model, EngineConfig(max_num_seqs=2, max_model_len=64))
        assert engine.model.config.moe_intermediate_size == (128 if model == widen_experts.DEMO else 384)
        tokens.append([o.token_ids for o in engine.generate(prompts, params)])
    assert tokens[0] == tokens[1]
