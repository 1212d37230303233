"""Offline expert affinity: traces -> affinity matrix -> placement -> dispatch tables and metrics.

Reading order: traces (row_filter, aligned) -> matrix -> placement (strategies, eplb, affinity_placement)
-> dispatch -> metrics -> prediction -> plot -> commands. Everything is a pure function on arrays.
"""
