"""Shared fixtures: the real flame-moe traces (skipped cleanly when ../shared is absent) and their
fit/evaluation split, computed once per session because several target tests use them."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from switchyard.router.affinity.aligned import AlignedRouting
from switchyard.router.affinity.matrix import AffinityMatrix, fit_affinity
from switchyard.router.affinity.traces import RoutingTrace, read_traces

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
FLAME_TRACES = SHARED / "data" / "traces" / "flame-moe-290m.parquet"


@dataclass(frozen=True)
class FlameSplit:
    trace: RoutingTrace
    matrix: AffinityMatrix  # fitted on seq_id < 16
    fit: AlignedRouting  # seq_id < 16
    evaluate: AlignedRouting  # seq_id >= 16


@pytest.fixture(scope="session")
def flame_path() -> Path:
    if not FLAME_TRACES.exists():
        pytest.skip(f"real traces not found at {FLAME_TRACES}")
    return FLAME_TRACES


@pytest.fixture(scope="session")
def flame(flame_path: Path) -> FlameSplit:
    trace = read_traces([flame_path])
    fit = trace.filter_rows("seq_id<16")
    return FlameSplit(trace, fit_affinity(fit), fit.aligned(), trace.filter_rows("seq_id>=16").aligned())


CORPORA = {"wiki": SHARED / "data" / "corpus" / "wiki-sample.txt", "news": SHARED / "data" / "corpus" / "lee-background.txt"}


@pytest.fixture(scope="session")
def demo_corpus_traces(tmp_path_factory) -> dict[str, RoutingTrace]:
    """The built-in model's routing on 64 sequences of 64 tokens of each corpus, recorded by `switchyard trace`."""
    from switchyard.cluster.cli import main

    if not all(path.exists() for path in CORPORA.values()):
        pytest.skip(f"corpora not found under {SHARED / 'data' / 'corpus'}")
    out = tmp_path_factory.mktemp("demo-traces")
    traces = {}
    for name, corpus in CORPORA.items():
        path = out / f"{name}.parquet"
        assert main(["trace", "--text", str(corpus), "--seq-len", "64", "--num-seqs", "64", "-o", str(path)]) == 0
        traces[name] = read_traces([path])
    return traces
