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
