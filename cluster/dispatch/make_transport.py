"""The transport an app's config names: Unix sockets (default), the compiled graph, direct actor calls, or Serve
handles."""

from __future__ import annotations

from switchyard.cluster.dispatch.compiled_graph import CompiledGraphTransport
from switchyard.cluster.dispatch.socket_transport import SocketTransport
from switchyard.cluster.dispatch.transport import ActorTransport, ExpertTransport, HandleTransport
from switchyard.configs.serve import AppConfig


def make_transport(cfg: AppConfig, group_handles: list) -> ExpertTransport:
    names = [cfg.group_deployment_name(g) for g in range(cfg.num_groups)]
    timeout = cfg.router.expert_timeout_s
    if cfg.router.transport == "socket":
        return SocketTransport(cfg.name, names, timeout_s=timeout)
    if cfg.router.transport == "compiled":
        return CompiledGraphTransport(cfg.name, names, timeout_s=timeout, max_in_flight=2 * cfg.router.micro_batches,
                                      idle_teardown_s=cfg.router.compiled_idle_teardown_s)
    if cfg.router.transport == "actor":
        return ActorTransport(cfg.name, names, timeout_s=timeout)
    return HandleTransport(group_handles, timeout_s=timeout)


def replica_counts(transport: ExpertTransport, cfg: AppConfig) -> list[int]:
    """Live replicas of each group as the transport sees them; Serve's handles hide theirs: the configured count."""
    counts = getattr(transport, "replica_counts", None)
    return counts() if counts is not None else [cfg.pool_of_group(g).pool.num_replicas for g in range(cfg.num_groups)]
