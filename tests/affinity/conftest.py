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
