"""The Compiled Graph transport on plain actors: it splits a group's tokens over the group's replicas, follows the
registry as replicas come and go, and survives a replica's death. (The Serve app runs it in test_cluster.py.)"""

import time

import pytest
import ray
import torch

from switchyard.cluster.dispatch.compiled_graph import CompiledGraphTransport
from switchyard.cluster.deployments.registry import get_registry
from switchyard.experts.messages import ExpertRequest

pytestmark = pytest.mark.ray
APP = "compiled-transport-test"


@ray.remote(num_cpus=0)
class FakeReplica:
    """Stands in for an expert-group replica: its 'experts' multiply the hidden states by `factor`."""

    def __init__(self, group: str, replica_id: str, factor: float):
        from switchyard.cluster.deployments import expert_group as expert_deployment

        class Server:
            calls = 0

            def forward(self, request):
                from switchyard.experts.messages import ExpertResponse

                self.calls += 1
                return ExpertResponse(request.layer, request.hidden * factor)

        expert_deployment._SERVING = Server()
        me = ray.get_runtime_context().current_actor
        ray.get(get_registry(APP).register.remote(group, replica_id, me))

    def calls(self) -> int:
        from switchyard.cluster.deployments import expert_group as expert_deployment

        return expert_deployment._SERVING.calls

    def pid(self) -> int:
        import os

        return os.getpid()


def request(num_tokens: int, layer: int = 0) -> ExpertRequest:
    hidden = torch.arange(num_tokens * 4, dtype=torch.float32).reshape(num_tokens, 4)
    return ExpertRequest(layer, hidden, torch.zeros(num_tokens, 2, dtype=torch.long), torch.ones(num_tokens, 2))


def round_trip(transport, sizes: dict[int, int]) -> dict[int, torch.Tensor]:
    responses = transport.receive(transport.send({g: request(n) for g, n in sizes.items()}))
    return {g: r.hidden for g, r in responses.items()}


def wait_until(condition, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_compiled_graph_follows_the_replica_set(ray_serve):
    a0 = FakeReplica.remote("g0", "a0", 2.0)
    a1 = FakeReplica.remote("g0", "a1", 2.0)
    b0 = FakeReplica.remote("g1", "b0", 3.0)
    ray.get([a.calls.remote() for a in (a0, a1, b0)])
    transport = CompiledGraphTransport(APP, ["g0", "g1"], timeout_s=30, refresh_s=0.1)
    added = []
    try:
        # a group's tokens are split over its replicas and come back in order
        out = round_trip(transport, {0: 5, 1: 3})
        assert torch.equal(out[0], 2.0 * request(5).hidden) and torch.equal(out[1], 3.0 * request(3).hidden)
        assert transport.replica_counts() == [2, 1]
        assert ray.get([a0.calls.remote(), a1.calls.remote()]) == [1, 1]
        # a group with no tokens in a layer is not asked
        assert set(round_trip(transport, {1: 2})) == {1}

        # autoscaling adds a replica: the next layer's graph includes it
        added.append(FakeReplica.remote("g1", "b1", 3.0))
        ray.get(added[0].calls.remote())
        wait_until(lambda: round_trip(transport, {0: 1, 1: 4}) and transport.replica_counts() == [2, 2])
        assert ray.get(added[0].calls.remote()) > 0

        # a replica dies: the layer is sent again over the live ones, and the dead one leaves the registry
        ray.kill(a1, no_restart=True)
        out = round_trip(transport, {0: 6, 1: 2})
        assert torch.equal(out[0], 2.0 * request(6).hidden)
        assert transport.replica_counts() == [1, 2]
        wait_until(lambda: "a1" not in ray.get(get_registry(APP).snapshot.remote())[1]["g0"])
    finally:
        transport.close()
        for actor in (a0, a1, b0, *added):
            ray.kill(actor)
        ray.kill(get_registry(APP))


def test_an_idle_graph_is_torn_down_so_replicas_stop_spinning_and_the_next_layer_builds_it_again(ray_serve):
    from switchyard.cluster.bench.cpu import cores_used

    replicas = [FakeReplica.remote("g0", "i0", 2.0), FakeReplica.remote("g1", "i1", 3.0)]
    pids = ray.get([r.pid.remote() for r in replicas])
    transport = CompiledGraphTransport(APP, ["g0", "g1"], timeout_s=30, refresh_s=0.1, idle_teardown_s=1.0)
    try:
        round_trip(transport, {0: 2, 1: 2})
        assert transport.builds == 1
        wait_until(lambda: transport._graph is None, seconds=10)
        # a bound far above the real figure (about 1%: `switchyard bench serve`), so that it cannot flake; a
        # spinning reader takes most of a core
        for pid in pids:
            assert cores_used([pid], 3.0) < 0.2
        out = round_trip(transport, {0: 3, 1: 1})
        assert torch.equal(out[0], 2.0 * request(3).hidden) and transport.builds == 2
    finally:
        transport.close()
        for actor in replicas:
            ray.kill(actor)
        ray.kill(get_registry(APP))


def test_a_replica_killed_while_the_graph_is_torn_down_is_left_out_of_the_next_graph_and_the_registry(ray_serve):
    """The death nobody saw (no call in flight, no graph): the router's follower pings it out of the registry,
    and the next layer's graph is built over the live replicas only, not over the dead actor (which would fail
    every build)."""
    a0, a1 = FakeReplica.remote("g0", "k0", 2.0), FakeReplica.remote("g0", "k1", 2.0)
    b0 = FakeReplica.remote("g1", "k2", 3.0)
    ray.get([a.calls.remote() for a in (a0, a1, b0)])
    transport = CompiledGraphTransport(APP, ["g0", "g1"], timeout_s=30, refresh_s=0.1, idle_teardown_s=0.5)
    try:
        round_trip(transport, {0: 2, 1: 2})
        wait_until(lambda: transport._graph is None, seconds=10)
        ray.kill(a1, no_restart=True)
        wait_until(lambda: "k1" not in ray.get(get_registry(APP).snapshot.remote())[1]["g0"])
        out = round_trip(transport, {0: 4, 1: 1})
        assert torch.equal(out[0], 2.0 * request(4).hidden) and transport.replica_counts() == [1, 1]
    finally:
        transport.close()
        for actor in (a0, a1, b0):
            ray.kill(actor)
        ray.kill(get_registry(APP))


def test_a_replica_killed_under_the_graph_sends_the_layer_again_by_direct_calls(ray_serve):
    """A death while the graph is up: the layer in flight comes back right (by direct calls to the live
    replicas), and so do the next ones until a new graph is built."""
    a0, a1 = FakeReplica.remote("g0", "d0", 2.0), FakeReplica.remote("g0", "d1", 2.0)
    b0 = FakeReplica.remote("g1", "d2", 3.0)
    ray.get([a.calls.remote() for a in (a0, a1, b0)])
    transport = CompiledGraphTransport(APP, ["g0", "g1"], timeout_s=30, refresh_s=0.1)
    try:
        round_trip(transport, {0: 2, 1: 2})
        pending = transport.send({0: request(6), 1: request(2)})
        ray.kill(a1, no_restart=True)
        out = {g: r.hidden for g, r in transport.receive(pending).items()}
        assert torch.equal(out[0], 2.0 * request(6).hidden) and torch.equal(out[1], 3.0 * request(2).hidden)
        for _ in range(3):
            out = round_trip(transport, {0: 3, 1: 3})
            assert torch.equal(out[0], 2.0 * request(3).hidden)
    finally:
        transport.close()
        for actor in (a0, a1, b0):
            ray.kill(actor)
        ray.kill(get_registry(APP))
