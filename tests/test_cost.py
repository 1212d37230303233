from switchyard.cluster.autoscaling.cost import cost_per_hour, cost_per_million_tokens


def test_cost_per_million_tokens():
    hourly = cost_per_hour(1, [2, 1, 1], router_price=1.0, expert_price=2.5)
    assert hourly == 1.0 + 4 * 2.5
    # 11 $/h at 1000 tok/s: 3.6M tokens an hour
    assert abs(cost_per_million_tokens(hourly, 1000.0) - 11.0 / 3.6) < 1e-9
    assert cost_per_million_tokens(hourly, 0.0) is None


def test_a_price_of_zero_is_not_priced_rather_than_free():
    from switchyard.cluster.autoscaling.cost import cost_report

    free = cost_report(1, [2, 1], router_price=1.0, expert_price=0.0, tokens_per_second=100.0)
    assert free["priced"] is False and free["dollars_per_hour"] is None and free["cost_per_million_tokens"] is None
    assert free["tokens_per_second"] == 100.0
    priced = cost_report(1, [2, 1], router_price=1.0, expert_price=2.0, tokens_per_second=1000.0)
    assert priced["priced"] and priced["dollars_per_hour"] == 7.0
    assert abs(priced["cost_per_million_tokens"] - 7.0 / 3.6) < 1e-9
    # the router alone (every expert in it): the experts' price does not matter
    assert cost_report(1, [], 1.0, 0.0, 10.0)["priced"]


def test_pools_on_different_hardware_are_costed_each_at_its_price():
    from switchyard.cluster.autoscaling.cost import cost_report

    # groups 0 and 1 on $4/h nodes (pool "experts"), group 2 on $1/h nodes (pool "cold"); 3600 tok/s
    report = cost_report(1, [2, 1, 3], router_price=2.0, expert_price=[4.0, 4.0, 1.0], tokens_per_second=3600.0,
                         pools={"experts": [0, 1], "cold": [2]})
    assert report["priced"] and report["dollars_per_hour"] == 2.0 + 3 * 4.0 + 3 * 1.0
    assert report["pools"] == {"router": {"replicas": 1, "replica_per_hour": 2.0, "dollars_per_hour": 2.0},
                               "experts": {"groups": [0, 1], "replicas": 3, "replica_per_hour": 4.0,
                                           "dollars_per_hour": 12.0},
                               "cold": {"groups": [2], "replicas": 3, "replica_per_hour": 1.0, "dollars_per_hour": 3.0}}
    assert abs(report["cost_per_million_tokens"] - 17.0 / 12.96) < 1e-9  # 12.96M tokens an hour
    # one pool left unpriced: that pool and the whole are unknown, not free; the others still say theirs
    unpriced = cost_report(1, [2, 1, 3], 2.0, [4.0, 4.0, 0.0], 3600.0, pools={"experts": [0, 1], "cold": [2]})
    assert not unpriced["priced"] and unpriced["dollars_per_hour"] is None
    assert unpriced["pools"]["cold"]["dollars_per_hour"] is None and unpriced["pools"]["experts"]["dollars_per_hour"] == 12.0
