"""Routing traces: one row per (token, MoE layer), read from and written to Parquet.

Parquet layout (shared/data/README.md), which the router's own trace writer also produces:

| column       | type           | here                                              |
|--------------|----------------|---------------------------------------------------|
| seq_id       | int32          | `seq_id [N]`                                      |
| pos          | int32          | `pos [N]`                                         |
| token_id     | int32 nullable | `token_id [N]`, -1 where unknown (ids are >= 0)   |
| layer        | int16          | `layer [N]`                                       |
| expert_ids   | list<int16>    | `expert_ids [N, k]`, best first                   |
| gate_weights | list<float32>  | `gate_weights [N, k]`                             |

File key-value metadata: `model`, `num_experts`, `top_k`, `layers` ("2-9" or "0,2,4-6"), `source`;
other keys are kept as `TraceMetadata.extra`. Lists have one length, top_k, in a trace: every model
served here routes a fixed top-k, and [N, k] arrays are what every consumer wants.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from os import PathLike
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from switchyard.router.affinity.aligned import AlignedRouting, align_layers
from switchyard.router.affinity.row_filter import parse_filter

_SCHEMA = pa.schema(
    [
        ("seq_id", pa.int32()),
        ("pos", pa.int32()),
        ("token_id", pa.int32()),
        ("layer", pa.int16()),
        # Items named "element", as in the reference traces (Parquet's own list naming).
        ("expert_ids", pa.list_(pa.field("element", pa.int16()))),
        ("gate_weights", pa.list_(pa.field("element", pa.float32()))),
    ]
)
_KNOWN_KEYS = ("model", "num_experts", "top_k", "layers", "source")


def parse_layer_list(text: str) -> tuple[int, ...]:
    """"2-9" -> (2, ..., 9); "0,2,4-6" -> (0, 2, 4, 5, 6)."""
    layers: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        layers.extend(range(int(lo), int(hi or lo) + 1))
    return tuple(layers)


def format_layer_list(layers: Sequence[int]) -> str:
    """Inverse of `parse_layer_list`, with runs written as ranges."""
    runs: list[str] = []
    ordered = sorted(set(int(layer) for layer in layers))
    start = 0
    for i in range(1, len(ordered) + 1):
        if i == len(ordered) or ordered[i] != ordered[i - 1] + 1:
            lo, hi = ordered[start], ordered[i - 1]
            runs.append(str(lo) if lo == hi else f"{lo}-{hi}")
            start = i
    return ",".join(runs)


@dataclass(frozen=True)
class TraceMetadata:
    model: str
    num_experts: int
    top_k: int
    layers: tuple[int, ...]
    source: str = ""
    extra: tuple[tuple[str, str], ...] = ()  # other file metadata keys, e.g. ("note", "...")

    def to_parquet(self) -> dict[bytes, bytes]:
        known = {
            "model": self.model,
            "num_experts": str(self.num_experts),
            "top_k": str(self.top_k),
            "layers": format_layer_list(self.layers),
            "source": self.source,
        }
        return {k.encode(): v.encode() for k, v in (*known.items(), *self.extra)}

    @staticmethod
    def from_parquet(raw: dict[bytes, bytes] | None, where: str) -> "TraceMetadata":
        text = {k.decode(): v.decode() for k, v in (raw or {}).items()}
        missing = [key for key in ("num_experts", "top_k") if key not in text]
        if missing:
            raise ValueError(f"{where}: Parquet metadata lacks {', '.join(missing)}")
        return TraceMetadata(
            model=text.get("model", ""),
            num_experts=int(text["num_experts"]),
            top_k=int(text["top_k"]),
            layers=parse_layer_list(text["layers"]) if text.get("layers") else (),
            source=text.get("source", ""),
            extra=tuple((k, v) for k, v in text.items() if k not in _KNOWN_KEYS),
        )


@dataclass(frozen=True)
class RoutingTrace:
    """Columns of a trace as numpy arrays; N rows, k = metadata.top_k."""

    seq_id: np.ndarray  # [N] int32
    pos: np.ndarray  # [N] int32
    token_id: np.ndarray  # [N] int32, -1 = unknown
    layer: np.ndarray  # [N] int16
    expert_ids: np.ndarray  # [N, k] int16
    gate_weights: np.ndarray  # [N, k] float32
    metadata: TraceMetadata = field(compare=False)

    def __post_init__(self) -> None:
        n, k = len(self.seq_id), self.metadata.top_k
        for name in ("pos", "token_id", "layer"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name}: shape {getattr(self, name).shape}, expected ({n},)")
        for name in ("expert_ids", "gate_weights"):
            if getattr(self, name).shape != (n, k):
                raise ValueError(f"{name}: shape {getattr(self, name).shape}, expected ({n}, {k}) (top_k={k})")
        if n and (self.expert_ids.min() < 0 or self.expert_ids.max() >= self.metadata.num_experts):
            raise ValueError(f"expert_ids: ids outside [0, {self.metadata.num_experts})")

    @property
    def num_rows(self) -> int:
        return len(self.seq_id)

    def select(self, keep: np.ndarray) -> "RoutingTrace":
        """Rows where `keep [N]` (bool) is true; metadata layers shrink to those still present."""
        layers = tuple(sorted(set(self.layer[keep].tolist())))
        return RoutingTrace(
            seq_id=self.seq_id[keep],
            pos=self.pos[keep],
            token_id=self.token_id[keep],
            layer=self.layer[keep],
            expert_ids=self.expert_ids[keep],
            gate_weights=self.gate_weights[keep],
            metadata=replace(self.metadata, layers=layers),
        )

    def filter_mask(self, expression: str) -> np.ndarray:
        """bool [N]: rows matching e.g. "seq_id<16 and layer>=3" (see row_filter)."""
        columns = {"seq_id": self.seq_id, "pos": self.pos, "token_id": self.token_id, "layer": self.layer}
        return parse_filter(expression).mask(columns)

    def filter_rows(self, expression: str) -> "RoutingTrace":
        return self.select(self.filter_mask(expression))

    def aligned(self) -> AlignedRouting:
        """Per-layer aligned arrays for the tokens present at every layer (see `align_layers`)."""
        return align_layers(
            self.seq_id, self.pos, self.layer, self.expert_ids, self.gate_weights, self.metadata.num_experts
        )


def filter_rows(trace: RoutingTrace, expression: str) -> RoutingTrace:
    return trace.filter_rows(expression)


def trace_from_layer(
    layer: int,
    seq_id: np.ndarray,  # [T]
    pos: np.ndarray,  # [T]
    expert_ids: np.ndarray,  # [T, k], the gate's top-k, best first
    gate_weights: np.ndarray,  # [T, k]
    metadata: TraceMetadata,
    token_id: np.ndarray | None = None,  # [T], None = unknown
) -> RoutingTrace:
    """One layer's routing of a batch as a trace: what a trace writer records per layer call.

    Accepts anything `np.asarray` takes (CPU torch tensors included); join the pieces with `concat_traces`.
    """
    n = len(seq_id)
    return RoutingTrace(
        seq_id=np.asarray(seq_id, dtype=np.int32),
        pos=np.asarray(pos, dtype=np.int32),
        token_id=np.full(n, -1, np.int32) if token_id is None else np.asarray(token_id, dtype=np.int32),
        layer=np.full(n, layer, np.int16),
        expert_ids=np.asarray(expert_ids, dtype=np.int16).reshape(n, metadata.top_k),
        gate_weights=np.asarray(gate_weights, dtype=np.float32).reshape(n, metadata.top_k),
        metadata=metadata,
    )


def concat_traces(traces: Sequence[RoutingTrace]) -> RoutingTrace:
    """Rows of all traces in order. Their num_experts and top_k must agree; metadata of the first wins
    except `layers`, which becomes the union."""
    first = traces[0].metadata
    for i, trace in enumerate(traces):
        if (trace.metadata.num_experts, trace.metadata.top_k) != (first.num_experts, first.top_k):
            raise ValueError(
                f"trace {i}: num_experts/top_k {trace.metadata.num_experts}/{trace.metadata.top_k} "
                f"differ from the first trace's {first.num_experts}/{first.top_k}"
            )
    layers = tuple(sorted({layer for trace in traces for layer in trace.metadata.layers}))
    return RoutingTrace(
        *(np.concatenate([getattr(t, name) for t in traces]) for name in _SCHEMA.names),
        metadata=replace(first, layers=layers),
    )


def _list_column(table: pa.Table, name: str, k: int, dtype: type, where: str) -> np.ndarray:
    column = table.column(name).combine_chunks()
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != k).any():
        bad = int(np.flatnonzero(lengths != k)[0])
        raise ValueError(f"{where}: {name} row {bad} has {lengths[bad]} entries, expected top_k={k}")
    return column.flatten().to_numpy(zero_copy_only=False).astype(dtype).reshape(len(column), k)


def read_traces(paths: Sequence[str | PathLike[str]]) -> RoutingTrace:
    """Read and concatenate trace files. Rows keep their seq_id: files may split one run by layer,
    so sequences of different runs need distinct seq_ids."""
    traces = []
    for path in paths:
        table = pq.read_table(path)
        metadata = TraceMetadata.from_parquet(table.schema.metadata, str(path))
        k = metadata.top_k
        token_id = table.column("token_id").combine_chunks() if "token_id" in table.column_names else None
        traces.append(
            RoutingTrace(
                seq_id=table.column("seq_id").to_numpy().astype(np.int32),
                pos=table.column("pos").to_numpy().astype(np.int32),
                token_id=(
                    np.full(table.num_rows, -1, np.int32)
                    if token_id is None
                    else token_id.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
                ),
                layer=table.column("layer").to_numpy().astype(np.int16),
                expert_ids=_list_column(table, "expert_ids", k, np.int16, str(path)),
                gate_weights=_list_column(table, "gate_weights", k, np.float32, str(path)),
                metadata=metadata,
            )
        )
    if not traces:
        raise ValueError("read_traces: no paths given")
    return concat_traces(traces)


def write_traces(path: str | PathLike[str], trace: RoutingTrace, metadata: TraceMetadata | None = None) -> None:
    """Write `trace` in the layout above; `metadata` (default: the trace's own) goes in the file footer."""
    meta = metadata or trace.metadata
    n, k = trace.expert_ids.shape
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))

    def lists(values: np.ndarray, name: str) -> pa.Array:
        kind = _SCHEMA.field(name).type
        return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), type=kind.value_type), type=kind)

    table = pa.Table.from_arrays(
        [
            pa.array(trace.seq_id, type=pa.int32()),
            pa.array(trace.pos, type=pa.int32()),
            pa.array(trace.token_id, type=pa.int32(), mask=trace.token_id < 0),
            pa.array(trace.layer, type=pa.int16()),
            lists(trace.expert_ids, "expert_ids"),
            lists(trace.gate_weights, "gate_weights"),
        ],
        schema=_SCHEMA.with_metadata(meta.to_parquet()),
    )
    pq.write_table(table, path)
