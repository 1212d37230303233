"""Expert affinity: traces -> affinity matrix -> placement -> dispatch tables, metrics, prediction.

Every file is one idea, and all are pure functions on arrays. Some run while the app serves, on the router;
the rest run offline, from the `switchyard affinity` and `switchyard place` commands (cluster/cli/), benchmarks
and scripts.

While serving (the router and its re-placement):
  placement                      Placement + JSON format (glossary: logical expert, slot, replica, group, fan-out)
  strategies                     the contiguous split, the default placement
  dispatch                       per-layer replica choice the router runs (DispatchTables, assign_replicas)
  rolling                        re-placement fitted on the router's recent routing, scored against the current one
  metrics                        fan-out, imbalance, bytes/token: what a re-placement is scored on
  affinity_placement, partition, replicas, alignment, robust, shifts, eplb, matrix, traces, aligned
                                 what `rolling` fits with (also offline); traces: routing in Parquet's layout

Offline only:
  row_filter                     the `--rows`/`--fit`/`--eval` filters of the trace commands
  prediction, neighbours, load_forecast
                                 later layers' experts from earlier routing; group-load forecast
  plot                           heatmaps
  synthetic                      synthetic traces with affinity structure, for tests and benchmarks

Nothing is imported here, so importing a submodule does not pull in torch or matplotlib.
"""
