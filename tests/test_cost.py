from switchyard.cluster.cost import cost_per_hour, cost_per_million_tokens


def test_cost_per_million_tokens():
    hourly = cost_per_hour(1, [2, 1, 1], router_price=1.0, expert_price=2.5)
    assert hourly == 1.0 + 4 * 2.5
    # 11 $/h at 1000 tok/s: 3.6M tokens an hour
    assert abs(cost_per_million_tokens(hourly, 1000.0) - 11.0 / 3.6) < 1e-9
    assert cost_per_million_tokens(hourly, 0.0) is None
