import os
from pathlib import Path

import pytest
import torch

from tiny_models import FAMILIES, make_checkpoint

# Two cores: more threads than that only adds contention between the test process and Ray workers.
torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One tiny random checkpoint per family, per-expert layout."""
    root = tmp_path_factory.mktemp("ckpt")
    return {f: make_checkpoint(root / f, f) for f in FAMILIES}


@pytest.fixture(scope="session")
def fused_checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt-fused")
    return {f: make_checkpoint(root / f, f, fused=True) for f in FAMILIES}
