"""A token's trip to its expert groups and back, at one MoE layer: the router's [Dispatch] and [Combine].

Read top-down:
  router/expert_backend.py   the engine's MoE call: `forward_step` submits each layer to an `ExpertBackend`
                             and waits for it (micro-batches overlap one's attention with another's wait)
  remote_experts.py          `RemoteExperts`, the backend the router uses with expert groups: per layer, which
                             group gets which tokens, one `ExpertRequest` per group; then the weighted sum back
  placement_tables.py        `GroupChooser`: (layer, expert) -> the group that serves it, from the placement;
                             for a replicated expert, the pure policy of router/affinity/dispatch.py
  make_transport.py          the transport the app config names
  transport.py               the `ExpertTransport` interface; Serve handles and direct actor calls
  socket_transport.py        the default transport: Unix sockets to the groups' replicas on the router's node
                             (direct actor calls to the others); frames.py, what travels on them
  compiled_graph.py          a Ray Compiled Graph over the groups' replicas on the
                             router's node (direct actor calls to a group with none there)
  graph.py                   one compiled graph: a channel pair per replica, a group's tokens split over them
  graph_loops.py             ending the graph loops a router that died left running in its replicas
Each transport takes its replicas from the registry (cluster/deployments/registry.py; dead ones are dropped,
cluster/deployments/liveness.py) and calls the group's `call_group` on the other side
(cluster/deployments/expert_group.py), which runs experts/.
"""
