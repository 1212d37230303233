"""The replica choice's pure part: a group's replicas on the router's node if it has any, else all of them.
(On a real multi-node Ray with real node ids: tests/test_multinode.py.)"""

from switchyard.cluster.dispatch.locality import local_first


def test_replicas_on_the_routers_node_are_chosen_when_there_are_any():
    replicas, nodes = ["a", "b", "c"], ["n1", "n2", "n1"]
    assert local_first(replicas, nodes, "n1") == ["a", "c"]
    assert local_first(replicas, nodes, "n2") == ["b"]


def test_with_none_there_or_nodes_unknown_every_replica_is_a_candidate():
    assert local_first(["a", "b"], ["n1", "n2"], "n3") == ["a", "b"]
    assert local_first(["a", "b"], [None, None], "n1") == ["a", "b"]
    assert local_first(["a", "b"], ["n1", None], None) == ["a", "b"]  # outside Ray: no node of its own
    assert local_first([], [], "n1") == []
