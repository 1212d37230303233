import os
from pathlib import Path

import pytest
import torch

from tiny_models import FAMILIES, make_checkpoint

# Two cores: more threads than that only adds contention between the test process and Ray workers.
torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# Where the numerics tests (test_numerics.py) run both models: "cpu" unless SWITCHYARD_TEST_DEVICE says "cuda"
# (or "cuda:N"), as scripts/gpu_check.sh does on a GPU machine. Asked for and absent is an error, not a skip:
# a GPU check that quietly ran on the CPU would pass without having checked anything.
NUMERICS_DEVICE = os.environ.get("SWITCHYARD_TEST_DEVICE", "cpu")


def pytest_collection_modifyitems(config, items):
    """Tests on the multi-node cluster run last: it takes over this process's Ray connection from `ray_serve`."""
    items.sort(key=lambda item: "multinode" in item.fixturenames)  # a stable sort: the others keep their order


def pytest_configure(config):
    if NUMERICS_DEVICE == "cpu":
        return
    try:
        kind = torch.device(NUMERICS_DEVICE).type
    except RuntimeError as err:
        raise pytest.UsageError(f"SWITCHYARD_TEST_DEVICE={NUMERICS_DEVICE!r}: {err}") from err
    if kind != "cuda":
        raise pytest.UsageError(f"SWITCHYARD_TEST_DEVICE must be 'cpu', 'cuda' or 'cuda:N', got {NUMERICS_DEVICE!r}")
    if not torch.cuda.is_available():
        raise pytest.UsageError(f"SWITCHYARD_TEST_DEVICE={NUMERICS_DEVICE} but torch {torch.__version__} sees no "
                                f"CUDA GPU (CUDA build: {torch.version.cuda})")


@pytest.fixture(scope="session")
def numerics_device() -> str:
    return NUMERICS_DEVICE


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One tiny random checkpoint per family, per-expert layout."""
    root = tmp_path_factory.mktemp("ckpt")
    return {f: make_checkpoint(root / f, f) for f in FAMILIES}


@pytest.fixture(scope="session")
def fused_checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt-fused")
    return {f: make_checkpoint(root / f, f, fused=True) for f in FAMILIES}


@pytest.fixture(scope="session")
def ray_serve():
    """One local Ray + Serve for the whole session (each start costs seconds). Yields the HTTP base URL."""
    import socket

    import ray
    from ray import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Logical CPUs above the 2 cores: replicas take fractions and mostly wait on each other.
    if _multinode:
        pytest.fail("ray_serve after the multi-node cluster took this process's Ray connection: the multi-node "
                    "tests must run last (pytest_collection_modifyitems)")
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    if ray.is_initialized() and not _multinode:  # else the multi-node fixture shut it down already
        serve.shutdown()
        ray.shutdown()


_multinode: list = []  # the multi-node cluster, once started


@pytest.fixture(scope="session")
def multinode():
    """A head and one worker node per expert group on real Ray (tests/multinode_cluster.py), shared by the tests
    that use it. Started after the single-node `ray_serve` is shut down: one process, one Ray cluster."""
    import ray
    from ray import serve

    from multinode_cluster import MultiNode

    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()
    cluster = MultiNode()
    _multinode.append(cluster)
    yield cluster
    cluster.shutdown()
