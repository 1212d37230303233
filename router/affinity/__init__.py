"""Offline expert affinity: traces -> affinity matrix -> placement -> dispatch tables, metrics, prediction.

Reading order (each file one idea, all pure functions on arrays):
  traces (row_filter, aligned)   routing traces in Parquet, filtered and aligned per layer
  matrix                         AffinityMatrix: popularity p, co-activation C, transition T
  placement                      Placement + JSON format (glossary: logical expert, slot, replica, group, fan-out)
  strategies, eplb               baselines: contiguous, round_robin, DeepSeek EPLB
  partition, replicas, alignment the pieces of affinity_placement
  affinity_placement             the affinity-aware placement
  dispatch                       per-layer replica choice the router runs (DispatchTables, assign_replicas)
  metrics                        fan-out, imbalance, bytes/token, group switches on held-out traces
  prediction, neighbours         later layers' experts from earlier routing; group-load forecast
  plot, commands                 heatmaps; `affinity fit|plot|predict` and `place` CLI
  synthetic                      synthetic traces with affinity structure, for tests and benchmarks

Nothing is imported here, so importing a submodule does not pull in torch or matplotlib.
"""
