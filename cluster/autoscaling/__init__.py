"""Expert-group autoscaling: what a replica measures (load_meter), what the router expects (demand), the policy Serve calls (policy), and what it costs (cost)."""
