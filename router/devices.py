"""The device a process computes on: checked once at start-up, so that asking for a GPU where there is none
fails with one line that says what to do, not deep inside the first forward pass."""

from __future__ import annotations

import torch

from switchyard.configs.model import ConfigError


def require_device(name: str) -> torch.device:
    """`name` as a torch.device that exists here."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ConfigError(f"device {name!r}: no CUDA GPU is usable here (torch {torch.__version__} is {build}, "
                              f"{torch.cuda.device_count()} GPUs visible); use --device cpu, or run on a machine "
                              "with a GPU and a CUDA build of torch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: only {torch.cuda.device_count()} CUDA devices are visible here")
    return device
