from dataclasses import replace

import numpy as np
import pytest

from switchyard.router.affinity.synthetic import synthetic_trace
from switchyard.router.affinity.traces import (
    TraceMetadata,
    concat_traces,
    format_layer_list,
    parse_layer_list,
    read_traces,
    trace_from_layer,
    write_traces,
)


def _assert_same_rows(a, b):
    for name in ("seq_id", "pos", "token_id", "layer", "expert_ids", "gate_weights"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_round_trip_keeps_rows_metadata_and_null_token_ids(tmp_path):
    trace = synthetic_trace(num_layers=3, num_experts=8, top_k=2, num_sequences=2, seq_len=4)
    token_id = np.arange(trace.num_rows, dtype=np.int32)
    token_id[::3] = -1  # unknown
    trace = replace(trace, token_id=token_id)
    meta = TraceMetadata("m", 8, 2, (0, 1, 2), "here", (("note", "hi"),))
    write_traces(tmp_path / "t.parquet", trace, meta)

    back = read_traces([tmp_path / "t.parquet"])
    _assert_same_rows(trace, back)
    assert back.metadata == meta

    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "t.parquet")
    assert table.column("token_id").null_count == len(token_id[::3])
    assert str(table.schema.field("expert_ids").type) == "list<element: int16>"
    assert table.schema.metadata[b"layers"] == b"0-2"


def test_built_per_layer_like_a_trace_writer(tmp_path):
    meta = TraceMetadata("m", num_experts=4, top_k=2, layers=(5, 6))
    pieces = [
        trace_from_layer(layer, [0, 0], [0, 1], [[0, 1], [2, 3]], [[0.6, 0.4], [0.5, 0.5]], meta, token_id=[7, 8])
        for layer in (5, 6)
    ]
    trace = concat_traces(pieces)
    assert trace.layer.tolist() == [5, 5, 6, 6]
    write_traces(tmp_path / "w.parquet", trace)
    _assert_same_rows(trace, read_traces([tmp_path / "w.parquet"]))


def test_reading_two_files_concatenates(tmp_path):
    trace = synthetic_trace(num_layers=2, num_experts=8, top_k=2, num_sequences=2, seq_len=4)
    write_traces(tmp_path / "a.parquet", trace.filter_rows("layer==0"))
    write_traces(tmp_path / "b.parquet", trace.filter_rows("layer==1"))
    both = read_traces([tmp_path / "a.parquet", tmp_path / "b.parquet"])
    _assert_same_rows(trace, both)
    assert both.metadata.layers == (0, 1)


def test_concat_refuses_different_expert_counts():
    a = synthetic_trace(num_experts=8)
    b = synthetic_trace(num_experts=16)
    with pytest.raises(ValueError, match="num_experts/top_k"):
        concat_traces([a, b])


def test_shape_checks_name_the_column():
    trace = synthetic_trace(top_k=2)
    with pytest.raises(ValueError, match="expert_ids"):
        type(trace)(trace.seq_id, trace.pos, trace.token_id, trace.layer, trace.expert_ids[:, :1],
                    trace.gate_weights, trace.metadata)


def test_aligned_keeps_tokens_present_at_every_layer():
    trace = synthetic_trace(num_layers=3, num_experts=8, top_k=2, num_sequences=2, seq_len=4)
    # Drop token (seq 1, pos 2) from layer 1 only, and shuffle the rows.
    keep = ~((trace.layer == 1) & (trace.seq_id == 1) & (trace.pos == 2))
    shuffled = trace.select(keep).select(np.random.default_rng(0).permutation(keep.sum()))
    aligned = shuffled.aligned()
    assert aligned.expert_ids.shape == (3, 7, 2)  # [L, T, k]
    assert (1, 2) not in set(zip(aligned.seq_id.tolist(), aligned.pos.tolist()))
    original = trace.aligned()
    kept = ~((original.seq_id == 1) & (original.pos == 2))
    np.testing.assert_array_equal(aligned.expert_ids, original.expert_ids[:, kept])


def test_filter_rows_on_real_traces(flame):
    assert flame.trace.metadata.num_experts == 64 and flame.trace.metadata.top_k == 6
    assert flame.trace.metadata.layers == tuple(range(2, 10))
    first_half = flame.trace.filter_rows("seq_id<16")
    assert first_half.num_rows == flame.trace.num_rows // 2 and first_half.seq_id.max() == 15
    assert flame.fit.expert_ids.shape == (8, 16 * 64, 6)


@pytest.mark.parametrize("text, layers", [("2-9", tuple(range(2, 10))), ("0,2,4-6", (0, 2, 4, 5, 6)), ("3", (3,))])
def test_layer_lists(text, layers):
    assert parse_layer_list(text) == layers
    assert format_layer_list(layers) == text
