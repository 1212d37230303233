"""`switchyard bench engine` end to end on a tiny checkpoint: it runs, prints its table, and checks tokens."""

from switchyard.cluster.cli import main
from pathlib import Path

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
