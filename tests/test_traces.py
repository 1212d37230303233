"""Routing traces recorded by the engine: the shared layout, every layer, sampling by sequence, bounded buffer."""

import numpy as np

from switchyard.cluster.cli import main as switchyard
from switchyard.configs.engine import EngineConfig
from switchyard.router.affinity.traces import read_traces
from switchyard.router.engine import Engine
from switchyard.router.sampling import SamplingParams
from switchyard.router.trace_recorder import TraceRecorder, trace_metadata


def recorded(checkpoints, tmp_path, sequences: int = 8, **recorder_args):
    engine = Engine.from_pretrained(checkpoints["qwen3_moe"], EngineConfig(max_num_seqs=8, max_model_len=64))
    cfg = engine.model.config
    meta = trace_metadata(cfg, "tiny")
    recorder = TraceRecorder(tmp_path, meta, **recorder_args)
    engine.observer = recorder
    prompts = [[5 + i % 8] * (3 + i % 8) for i in range(sequences)]
    outputs = engine.generate(prompts, SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True))
    files = recorder.close()
    return read_traces(files) if files else None, recorder, prompts, outputs


def test_every_token_at_every_layer_with_its_position_and_token(checkpoints, tmp_path):
    trace, recorder, prompts, outputs = recorded(checkpoints, tmp_path)
    layers = (0, 1, 2)
    # prompt tokens, then each generated token except the last (it is sampled, never run through the model)
    tokens = sum(len(p) + len(o.token_ids) - 1 for p, o in zip(prompts, outputs))
    assert trace.num_rows == recorder.recorded_rows == tokens * len(layers)
    assert sorted(set(trace.layer.tolist())) == list(layers)
    assert trace.expert_ids.shape == (trace.num_rows, 3)
    assert trace.expert_ids.min() >= 0 and trace.expert_ids.max() < 8
    assert np.all(np.diff(trace.gate_weights, axis=1) <= 1e-6)  # best first
    seq = trace.seq_id[0]
    mine = (trace.seq_id == seq) & (trace.layer == 0)
    full = list(prompts[0]) + list(outputs[0].token_ids)
    assert sorted(trace.pos[mine].tolist()) == list(range(len(full) - 1))
    assert [full[p] for p in trace.pos[mine]] == trace.token_id[mine].tolist()


def test_sampling_keeps_whole_sequences(checkpoints, tmp_path):
    # The choice is a fixed hash of each sequence's number, which counts every sequence this process made
    # before: 8 in a row all fell on one side of it in one test order, so 32 (a 2^-31 chance of that).
    trace, _, _, _ = recorded(checkpoints, tmp_path, sequences=32, sample_rate=0.5)
    seqs = set(trace.seq_id.tolist())
    assert 0 < len(seqs) < 32
    for seq in seqs:  # a sampled sequence is recorded at every layer, every position
        rows = trace.seq_id == seq
        per_layer = [int((rows & (trace.layer == layer)).sum()) for layer in (0, 1, 2)]
        assert per_layer[0] == per_layer[1] == per_layer[2] > 0


def test_full_buffer_drops_and_counts(checkpoints, tmp_path):
    trace, recorder, _, _ = recorded(checkpoints, tmp_path, max_buffer_rows=20, flush_interval_s=3600)
    assert recorder.dropped_rows > 0
    assert trace is None or trace.num_rows <= 20


def test_trace_command_writes_the_shared_layout(checkpoints, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("A switchyard sorts railway cars onto tracks. " * 40)
    out = tmp_path / "traces.parquet"
    assert switchyard(["trace", "--model", str(checkpoints["olmoe"]), "--text", str(text), "--seq-len", "16",
                       "--num-seqs", "5", "--max-model-len", "64", "-o", str(out)]) == 0
    trace = read_traces([out])
    assert trace.num_rows == 5 * 16 * 3
    assert trace.metadata.num_experts == 8 and trace.metadata.top_k == 2 and trace.metadata.layers == (0, 1, 2)
    assert len(set(trace.seq_id.tolist())) == 5
