"""How good is a placement on (held-out) traces: fan-out, load imbalance, bytes on the wire, switches.

Tokens are dispatched with the router's own rule (dispatch.assign_replicas), in batches of
`batch_tokens` with group loads starting from zero per batch, as the router does per step. So with
replicas the numbers are those of the replica each token would really be sent to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from switchyard.router.affinity.aligned import AlignedRouting
from switchyard.router.affinity.dispatch import DispatchTables, assign_replicas
from switchyard.router.affinity.placement import Placement


@dataclass(frozen=True)
class PlacementReport:
    strategy: str
    layers: np.ndarray  # [L] layer ids evaluated
    fan_out: np.ndarray  # [L] mean distinct groups per token
    imbalance: np.ndarray  # [L] max / mean of per-group (token, expert) assignments
    bytes_per_token: np.ndarray  # [L] fan_out * hidden_size * bytes_per_element, router -> groups, one way
    group_switches: np.ndarray  # [L-1] mean groups a token uses at layer l+1 but did not at layer l
    group_load: np.ndarray | None = None  # [L, G] (token, expert) assignments each group took (the planner's load)

    @property
    def mean_fan_out(self) -> float:
        return float(self.fan_out.mean())

    @property
    def mean_imbalance(self) -> float:
        return float(self.imbalance.mean())

    @property
    def mean_bytes_per_token(self) -> float:
        return float(self.bytes_per_token.mean())

    @property
    def mean_group_switches(self) -> float:
        return float(self.group_switches.mean()) if len(self.group_switches) else 0.0


def dispatch_layer(
    expert_ids: np.ndarray,  # [T, k]
    layer: int,
    tables: DispatchTables,
    batch_tokens: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch all tokens of one layer batch by batch -> (group_ids [T, k], total group load [G])."""
    ids = torch.from_numpy(expert_ids.astype(np.int64))
    groups = torch.empty_like(ids)
    total = torch.zeros(tables.num_groups, dtype=torch.float64)
    for start in range(0, len(ids), batch_tokens):
        load = torch.zeros(tables.num_groups, dtype=torch.float64)
        groups[start : start + batch_tokens] = assign_replicas(ids[start : start + batch_tokens], layer, tables, load)
        total += load
    return groups.numpy(), total.numpy()


def groups_used(group_ids: np.ndarray, num_groups: int) -> np.ndarray:
    """group_ids [T, k] -> bool [T, G]: groups each token is sent to."""
    used = np.zeros((len(group_ids), num_groups), dtype=bool)
    np.put_along_axis(used, group_ids, True, axis=1)
    return used


def evaluate_placement(
    placement: Placement,
    routing: AlignedRouting,
    hidden_size: int,
    bytes_per_element: int = 2,
    batch_tokens: int = 256,
) -> PlacementReport:
    """Score `placement` on every layer it shares with `routing`."""
    tables = DispatchTables.from_placement(placement)
    layers = [int(layer) for layer in routing.layers if int(layer) in placement.layers]
    if not layers:
        raise ValueError(f"no common layers: placement {list(placement.layers)}, traces {routing.layers.tolist()}")
    fan_out, imbalance, switches, loads = [], [], [], []
    previous: np.ndarray | None = None
    for layer in layers:
        l = int(np.flatnonzero(routing.layers == layer)[0])
        group_ids, load = dispatch_layer(routing.expert_ids[l], layer, tables, batch_tokens)
        used = groups_used(group_ids, placement.num_groups)  # [T, G]
        fan_out.append(used.sum(1).mean())
        imbalance.append(load.max() / load.mean())
        loads.append(load)
        if previous is not None:
            switches.append((used & ~previous).sum(1).mean())
        previous = used
    fan = np.array(fan_out)
    return PlacementReport(
        strategy=placement.strategy,
        layers=np.array(layers),
        fan_out=fan,
        imbalance=np.array(imbalance),
        bytes_per_token=fan * hidden_size * bytes_per_element,
        group_switches=np.array(switches),
        group_load=np.array(loads),
    )
