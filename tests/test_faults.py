"""Faults in the distributed path, for every transport (socket, the default, first; compiled; actor; handle), under 32
streaming requests and while idle (the compiled graph torn down): SIGKILL of an expert-group replica, SIGKILL
of the router replica, an exception on the router's engine thread.

For each: no request hangs past BOUND_S; every request ends with the single-process engine's greedy text or a
503 with Retry-After (a stream already started: an error event), except requests lost with the router's own
process (a stream cut, or the 500 of Serve's proxy for one whose answer had not begun); serving resumes by
itself within RECOVER_S. One app per transport, reused across its
faults. `switchyard bench faults` runs the same runs and prints the table (docs/operations.md)."""

import pytest
from ray import serve

from switchyard.cluster.app import build_app
from switchyard.cluster.bench.fault_runs import FAULTS, reference_texts, run_fault, wait_until_serving
from test_cluster import MODEL, app_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]
STREAMS, TOKENS = 32, 12
BOUND_S = 60  # per request: the expert timeout (20 s) and a replica's restart, on 2 busy cores
RECOVER_S = 30


@pytest.fixture(scope="module")
def want(checkpoints):
    return reference_texts(checkpoints["qwen3_moe"], STREAMS, TOKENS)


@pytest.fixture(scope="module", params=["socket", "compiled", "actor", "handle"])
def app(request, ray_serve, checkpoints):
    transport = request.param
    config = app_config(checkpoints["qwen3_moe"], 2, transport, max_num_seqs=STREAMS,
                        max_waiting_requests=2 * STREAMS)
    config["name"] = name = f"faults-{transport}"
    config["router_pool"]["max_ongoing_requests"] = 4 * STREAMS
    serve.run(build_app(config), name=name, route_prefix=f"/{name}")
    yield transport, name, f"{ray_serve}/{name}"
    serve.delete(name)


@pytest.mark.parametrize("mode", ["load", "idle"])
@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_ends_every_request_right_or_with_a_503_and_serving_resumes(app, want, fault, mode):
    transport, name, url = app
    assert wait_until_serving(url, MODEL, want, TOKENS), "the app does not serve before the fault"
    run = run_fault(fault, transport, mode, url, MODEL, want, name, f"{name}-experts-1", streams=STREAMS,
                    max_tokens=TOKENS, bound_s=BOUND_S, recover_limit_s=2 * RECOVER_S)
    print(run)
    ends = run.ends
    assert ends["hung"] == 0 and ends["wrong"] == 0 and ends["other"] == 0, run
    if fault != "router-kill":  # only the router's own death loses what it holds: streams cut, or the proxy's 500
        assert ends["cut"] == 0 and ends["lost"] == 0, run
    if mode == "load":
        assert sum(ends.values()) >= STREAMS
    assert run.recover_s is not None and run.recover_s < RECOVER_S, run
