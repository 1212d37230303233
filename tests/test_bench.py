"""`switchyard bench engine` end to end on a tiny checkpoint: it runs, prints its table, and checks tokens."""

from switchyard.cluster.cli import main


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


def test_bench_otel_measures_the_three_dispatch_hook_paths():
    from switchyard.cluster import tracing
    from switchyard.cluster.bench import otel

    rows = otel.run(repeats=2000)
    assert [r[0] for r in rows] == ["tracing off", "on, step not sampled", "on, sampled layer (span + carrier + end)"]
    assert rows[2][1] > 0 and not tracing.enabled()  # the process is left as it was: off
