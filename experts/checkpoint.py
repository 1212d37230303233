"""Lazy reading of a Hugging Face checkpoint folder (`config.json` + `*.safetensors`).

Nothing is read until a tensor is asked for, and then only that tensor (or that slice of it), so an expert
group can open a checkpoint of any size and pull in just its own experts. Every read is recorded in
`tensors_read`, which is how tests and deployments prove what a process loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from switchyard.configs.model import ConfigError, ModelConfig


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file or tensor."""


@dataclass
class Checkpoint:
    path: Path
    config: ModelConfig
    # tensor name -> safetensors file holding it
    index: dict[str, Path]
    tensors_read: list[str] = field(default_factory=list)
    _handles: dict[Path, object] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str | Path) -> "Checkpoint":
        path = Path(path)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise CheckpointError(f"{path}: no config.json (is this a Hugging Face model folder?)")
        try:
            raw = json.loads(config_file.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{config_file}: not valid JSON ({err})") from err
        try:
            config = ModelConfig.from_hf_dict(raw)
        except ConfigError as err:
            raise CheckpointError(f"{config_file}: {err}") from err
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{path}: no *.safetensors files")
        index: dict[str, Path] = {}
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    index[name] = file
        return cls(path=path, config=config, index=index)

    def has(self, name: str) -> bool:
        return name in self.index

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle(name).get_slice(name).get_shape())

    def get(self, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Read one tensor; with `shape`, fail naming the tensor if its shape differs."""
        tensor = self._handle(name).get_tensor(name)
        self.tensors_read.append(name)
        if shape is not None and tuple(tensor.shape) != tuple(shape):
            raise CheckpointError(f"tensor `{name}` has shape {tuple(tensor.shape)}, expected {tuple(shape)}")
        return tensor

    def get_rows(self, name: str, rows: list[int], row_shape: tuple[int, ...]) -> torch.Tensor:
        """Read only `rows` of a stacked tensor (e.g. some experts of a fused [E, ...] weight)."""
        full = self.shape(name)
        if tuple(full[1:]) != tuple(row_shape):
            raise CheckpointError(f"tensor `{name}` has shape {full}, expected [*, {', '.join(map(str, row_shape))}]")
        sliced = self._handle(name).get_slice(name)
        parts = [sliced[r:r + 1] for r in rows]  # only these bytes are read
        self.tensors_read.append(f"{name}[{','.join(map(str, rows))}]")
        return torch.cat(parts) if parts else torch.empty((0, *row_shape))

    def _handle(self, name: str):
        file = self.index.get(name)
        if file is None:
            raise CheckpointError(f"tensor `{name}` is missing from the checkpoint at {self.path}")
        if file not in self._handles:
            self._handles[file] = safe_open(str(file), framework="pt")
        return self._handles[file]
