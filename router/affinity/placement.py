"""Placement: which expert group holds which experts, per MoE layer, and its JSON file format.

Glossary
- logical expert: expert e of MoE layer l in the model, one set of weights; ids 0..E-1 per layer.
- physical slot: room for one logical expert's weights in one group's memory. A group has the same
  number of slots at every layer (E/G, plus replica slots / G), so every group needs equal memory.
- replica: a copy of a logical expert in a second (third...) group. A logical expert held by n groups
  has n replicas; the router picks one per token (see dispatch.py).
- group: an expert-group deployment (one GPU node) holding a set of (layer, logical expert) pairs.
  Groups are numbered 0..G-1 and named "group-<g>" in files.
- fan-out: the number of distinct groups a token is sent to at one layer; fewer groups = fewer
  messages and fewer copies of the hidden state on the wire.

File format (version 1), read by the serve config:

    {"version": 1, "strategy": "affinity", "num_groups": G, "num_experts": E, "layers": [2, 3, ...],
     "groups": [{"name": "group-0", "experts": {"2": [0, 5, ...], "3": [...]}}, ...]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from os import PathLike
from typing import Sequence

import numpy as np

PLACEMENT_VERSION = 1


class PlacementError(ValueError):
    """A placement is malformed; `field` names the offending JSON field, e.g. "groups[2].experts.5"."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True)
class Placement:
    strategy: str
    layers: tuple[int, ...]  # MoE layer ids, [L]
    holds: np.ndarray  # [L, G, E] bool: holds[l, g, e] = group g holds expert e of layers[l]

    def __post_init__(self) -> None:
        if self.holds.ndim != 3 or self.holds.shape[0] != len(self.layers):
            raise PlacementError("layers", f"{len(self.layers)} layers but holds has shape {self.holds.shape}")
        if len(set(self.layers)) != len(self.layers):
            raise PlacementError("layers", f"repeated layer ids in {list(self.layers)}")
        if self.num_groups < 1 or self.num_experts < 1:
            raise PlacementError("num_groups", f"need at least one group and expert, got {self.holds.shape[1:]}")
        unheld = np.argwhere(~self.holds.any(axis=1))  # [n, 2] (layer index, expert)
        if len(unheld):
            l, e = unheld[0]
            raise PlacementError(
                f"groups[*].experts.{self.layers[l]}",
                f"expert {e} of layer {self.layers[l]} is held by no group ({len(unheld)} such (layer, expert) pairs)",
            )

    @property
    def num_groups(self) -> int:
        return self.holds.shape[1]

    @property
    def num_experts(self) -> int:
        return self.holds.shape[2]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def layer_index(self, layer: int) -> int:
        try:
            return self.layers.index(layer)
        except ValueError:
            raise KeyError(f"layer {layer} is not placed (layers {list(self.layers)})") from None

    def replica_counts(self) -> np.ndarray:
        """[L, E] int: groups holding each expert."""
        return self.holds.sum(axis=1)

    def slots_per_group(self) -> np.ndarray:
        """[L, G] int: experts each group holds at each layer."""
        return self.holds.sum(axis=2)

    def groups_of(self, layer: int, expert: int) -> list[int]:
        return np.flatnonzero(self.holds[self.layer_index(layer), :, expert]).tolist()

    def experts_of_group(self, group: int) -> dict[int, list[int]]:
        """{layer id: expert ids held by `group`}."""
        return {layer: np.flatnonzero(self.holds[l, group]).tolist() for l, layer in enumerate(self.layers)}

    def to_json(self) -> str:
        groups = [
            {"name": f"group-{g}", "experts": {str(layer): ids for layer, ids in self.experts_of_group(g).items()}}
            for g in range(self.num_groups)
        ]
        document = {
            "version": PLACEMENT_VERSION,
            "strategy": self.strategy,
            "num_groups": self.num_groups,
            "num_experts": self.num_experts,
            "layers": list(self.layers),
            "groups": groups,
        }
        return json.dumps(document, indent=1)

    @staticmethod
    def from_json(text: str) -> "Placement":
        return _parse(json.loads(text))

    def save(self, path: str | PathLike[str]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json())

    @staticmethod
    def load(path: str | PathLike[str]) -> "Placement":
        with open(path, encoding="utf-8") as f:
            return Placement.from_json(f.read())


def placement_from_groups(strategy: str, layers: Sequence[int], group_of_expert: np.ndarray) -> Placement:
    """A replica-free placement from group_of_expert [L, E] (values in 0..G-1)."""
    num_layers, num_experts = group_of_expert.shape
    num_groups = int(group_of_expert.max()) + 1
    holds = np.zeros((num_layers, num_groups, num_experts), dtype=bool)
    l_index, e_index = np.indices(group_of_expert.shape)
    holds[l_index, group_of_expert, e_index] = True
    return Placement(strategy, tuple(int(layer) for layer in layers), holds)


def _require_int(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlacementError(field, f"expected an integer, got {value!r}")
    return value


def _parse(document: object) -> Placement:
    if not isinstance(document, dict):
        raise PlacementError("<root>", "expected a JSON object")
    for key in ("version", "strategy", "num_groups", "num_experts", "layers", "groups"):
        if key not in document:
            raise PlacementError(key, "missing")
    if document["version"] != PLACEMENT_VERSION:
        raise PlacementError("version", f"{document['version']!r} is not supported (expected {PLACEMENT_VERSION})")
    if not isinstance(document["strategy"], str):
        raise PlacementError("strategy", f"expected a string, got {document['strategy']!r}")
    num_groups = _require_int(document["num_groups"], "num_groups")
    num_experts = _require_int(document["num_experts"], "num_experts")
    if num_experts < 1:
        raise PlacementError("num_experts", f"must be positive, got {num_experts}")
    if not isinstance(document["layers"], list):
        raise PlacementError("layers", "expected a list of layer ids")
    layers = [_require_int(v, f"layers[{i}]") for i, v in enumerate(document["layers"])]
    groups = document["groups"]
    if not isinstance(groups, list) or len(groups) != num_groups:
        raise PlacementError("groups", f"expected a list of num_groups={num_groups} groups")
    holds = np.zeros((len(layers), max(num_groups, 0), num_experts), dtype=bool)
    for g, group in enumerate(groups):
        where = f"groups[{g}]"
        if not isinstance(group, dict) or not isinstance(group.get("experts"), dict):
            raise PlacementError(f"{where}.experts", "expected an object {\"<layer>\": [expert ids]}")
        if not isinstance(group.get("name"), str):
            raise PlacementError(f"{where}.name", f"expected a string, got {group.get('name')!r}")
        for layer_key, ids in group["experts"].items():
            field = f"{where}.experts.{layer_key}"
            if not layer_key.lstrip("-").isdigit() or int(layer_key) not in layers:
                raise PlacementError(field, f"layer {layer_key!r} is not in layers {layers}")
            if not isinstance(ids, list):
                raise PlacementError(field, "expected a list of expert ids")
            for i, expert in enumerate(ids):
                if not 0 <= _require_int(expert, f"{field}[{i}]") < num_experts:
                    raise PlacementError(f"{field}[{i}]", f"expert id {expert} outside [0, {num_experts})")
            if len(set(ids)) != len(ids):
                raise PlacementError(field, "an expert id is listed twice")
            holds[layers.index(int(layer_key)), g, ids] = True
    return Placement(document["strategy"], tuple(layers), holds)
