"""Capacity planning and serving simulation for Switchyard at GPU scale (`switchyard plan`).

Reading order: hardware.py (profiles) -> model_shape.py (a config's per-token costs) -> performance.py (one
decode step, a roofline) -> routing.py (fan-out, imbalance, per-group load) -> search.py (plans meeting a
target) -> pools.py (which groups a cheaper node type can serve) -> workloads.py, simulator.py and serve_step.py
(serving with the real autoscaling policy and Serve's delays) -> day_cycle.py and saving_bounds.py (what scaling
saves, what limits it) -> shift.py (forecast-led against reactive scaling when another group turns hot) ->
validation.py and host.py (checks against published systems and this machine) -> pareto.py, report.py; the
command is cluster/cli/plan.py.
"""
