"""Hardware profiles: what one accelerator (or this machine) computes, reads and sends, and what it costs.

A profile is per device (one GPU, or this whole machine): dense peak FLOP/s for 16-bit and 8-bit matmuls,
memory bandwidth and size, how many devices share a node, the per-layer transports it can use (a fixed
round-trip latency and the bandwidth each byte then pays), and a price per device-hour.

The GPU figures are the vendors' datasheets (dense, i.e. without 2:4 sparsity), cited per profile. The
achievable fractions (`compute_efficiency`, `memory_efficiency`, `network_efficiency`) and the per-layer and
per-step overheads are global assumptions of the model, the same for every GPU profile and every validation
row; they are not fitted per row. Prices are assumptions (on-demand list prices vary by provider and month):
pass `--price` to use yours.

Transports, per MoE layer and per call (a router's batch to the groups and back):
- `nvlink`: GPU to GPU within a node; `rdma`: DeepEP-style low-latency kernels over InfiniBand
  (https://gh.072103.xyz/deepseek-ai/DeepEP: about 50 GB/s per 400 Gb/s CX7 NIC, dispatch + combine of 128
  tokens at EP64 in roughly 0.5 ms);
- `ray-compiled`, `ray-actor`, `serve-handle`: Switchyard's own transports. On a GPU cluster their latency is
  not measured (no GPU cluster here): the profiles carry the round trips measured on this machine's 2 cores
  scaled down to 1 ms for a Compiled Graph (the DESIGN's working figure) and kept in proportion for the others;
  `switchyard plan --measure-host` measures them on the machine it runs on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class Transport:
    """One per-layer transport: a call costs `latency_s` plus its bytes at `bandwidth_bytes_per_s`."""

    name: str
    latency_s: float  # fixed round trip of one call (router -> groups -> router), whatever its size
    bandwidth_bytes_per_s: float  # per device, each direction
    gpu_to_gpu: bool = False  # True: tensors move device to device (no host copy)

    def __post_init__(self) -> None:
        if self.latency_s < 0 or self.bandwidth_bytes_per_s <= 0:
            raise ValueError(f"transport {self.name!r}: latency must be >= 0 and bandwidth > 0")

    def call_seconds(self, bytes_each_way: float, network_efficiency: float = 1.0) -> float:
        return self.latency_s + 2.0 * bytes_each_way / (self.bandwidth_bytes_per_s * network_efficiency)


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    peak_flops_16bit: float  # dense bf16/fp16 matmul FLOP/s per device
    peak_flops_8bit: float  # dense fp8/int8 matmul FLOP/s per device (= 16-bit where there is none)
    memory_bandwidth_bytes_per_s: float
    memory_bytes: float
    devices_per_node: int
    price_per_hour: float  # dollars per device-hour
    transports: dict[str, Transport] = field(default_factory=dict)
    compute_efficiency: float = 0.45  # achievable share of peak FLOP/s in decode-sized matmuls and attention
    memory_efficiency: float = 0.7  # achievable share of memory bandwidth
    network_efficiency: float = 0.7  # DeepEP reaches about 35-46 GB/s of a 50 GB/s NIC
    layer_overhead_s: float = 20e-6  # launches and synchronisation per layer that no roofline counts
    step_overhead_s: float = 2e-3  # scheduler, sampling and host work per decode step
    # Host work per sequence per decode step that no roofline counts. A GPU engine overlaps it with the device
    # (0 in the GPU profiles); a CPU engine pays it in line: batch building, the paged cache's gathers, sampling
    # over the vocabulary, small matmuls below the measured peak (`--measure-host` measures it).
    sequence_overhead_s: float = 0.0
    # Host work per distinct expert a layer's batch hits, per device. A GPU's grouped GEMM runs every expert in one
    # launch (0 in the GPU profiles); torch's grouped GEMM on a CPU runs a small GEMM per expert, and a few rows a
    # GEMM run far below the measured peak: the step grows with the experts hit until every one is
    # (`--measure-host` measures it).
    expert_overhead_s: float = 0.0
    # This machine only (0 elsewhere): a deployment's processes share this many CPU cores (performance.core_sharing)
    shared_cores: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("peak_flops_16bit", "peak_flops_8bit", "memory_bandwidth_bytes_per_s", "memory_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"hardware profile {self.name!r}: `{name}` must be > 0")
        if self.devices_per_node < 1:
            raise ValueError(f"hardware profile {self.name!r}: `devices_per_node` must be >= 1")

    def transport(self, name: str) -> Transport:
        if name not in self.transports:
            raise ValueError(f"hardware profile {self.name!r} has no transport {name!r}; "
                             f"it has {sorted(self.transports)}")
        return self.transports[name]

    def with_price(self, price_per_hour: float) -> "HardwareProfile":
        return replace(self, price_per_hour=price_per_hour)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "HardwareProfile":
        transports = {k: Transport(**v) for k, v in data.get("transports", {}).items()}
        return cls(**{**data, "transports": transports})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "HardwareProfile":
        return cls.from_json(json.loads(Path(path).read_text()))


GB = 1e9
TB = 1e12
INFINIBAND_NDR = 50 * GB  # one 400 Gb/s NIC per GPU

# Switchyard's transports on a GPU cluster: round trips per call, not measured on GPUs (see the module docstring).
RAY_TRANSPORTS = {
    "ray-compiled": Transport("ray-compiled", 1.0e-3, INFINIBAND_NDR),
    "ray-actor": Transport("ray-actor", 2.7e-3, INFINIBAND_NDR),
    "serve-handle": Transport("serve-handle", 5.4e-3, INFINIBAND_NDR),
}


def _gpu_transports(nvlink_bytes_per_s: float | None) -> dict[str, Transport]:
    out = {"rdma": Transport("rdma", 40e-6, INFINIBAND_NDR, gpu_to_gpu=True), **RAY_TRANSPORTS}
    if nvlink_bytes_per_s:
        out["nvlink"] = Transport("nvlink", 15e-6, nvlink_bytes_per_s / 2, gpu_to_gpu=True)  # per direction
    return out


BUILTIN_PROFILES: dict[str, HardwareProfile] = {
    "H100": HardwareProfile(
        "H100", 989 * TB, 1979 * TB, 3.35 * TB, 80 * GB, 8, 3.00, _gpu_transports(900 * GB),
        source="https://www.nvidia.com/en-us/data-center/h100/ (H100 SXM: 989 TFLOPS bf16 and 1,979 fp8 dense "
               "(the datasheet's 1,979/3,958 are with sparsity), 80 GB HBM3 at 3.35 TB/s, NVLink 900 GB/s)"),
    "H800": HardwareProfile(
        "H800", 989 * TB, 1979 * TB, 3.35 * TB, 80 * GB, 8, 3.00, _gpu_transports(400 * GB),
        source="H100 SXM compute and memory with NVLink cut to 400 GB/s (DeepSeek-V3 technical report, "
               "https://arxiv.org/abs/2412.19437, section 3.1)"),
    "H200": HardwareProfile(
        "H200", 989 * TB, 1979 * TB, 4.8 * TB, 141 * GB, 8, 3.80, _gpu_transports(900 * GB),
        source="https://www.nvidia.com/en-us/data-center/h200/ (H200 SXM: H100's compute, 141 GB HBM3e at "
               "4.8 TB/s, NVLink 900 GB/s)"),
    "A100": HardwareProfile(
        "A100", 312 * TB, 624 * TB, 2.039 * TB, 80 * GB, 8, 1.80, _gpu_transports(600 * GB),
        source="https://www.nvidia.com/en-us/data-center/a100/ (A100 80GB SXM: 312 TFLOPS bf16 dense, 624 int8 "
               "dense (no fp8), 2,039 GB/s HBM2e, NVLink 600 GB/s)"),
    "L40S": HardwareProfile(
        "L40S", 362 * TB, 733 * TB, 0.864 * TB, 48 * GB, 8, 1.00, _gpu_transports(None),
        source="https://www.nvidia.com/en-us/data-center/l40s/ (L40S: 362 TFLOPS bf16 dense, 733 fp8 dense, "
               "48 GB GDDR6 at 864 GB/s, PCIe Gen4 x16, no NVLink)"),
}


def resolve_profile(name_or_path: str, price: float | None = None) -> HardwareProfile:
    """A built-in profile by name (case-insensitive), or a JSON profile file (`--measure-host` writes one)."""
    by_name = {k.lower(): v for k, v in BUILTIN_PROFILES.items()}
    if name_or_path.lower() in by_name:
        profile = by_name[name_or_path.lower()]
    elif Path(name_or_path).is_file():
        profile = HardwareProfile.load(name_or_path)
    else:
        raise SystemExit(f"--hardware {name_or_path!r}: not one of {sorted(BUILTIN_PROFILES)} nor a profile file "
                         "(write this machine's with `switchyard plan --measure-host -o host.json`)")
    return profile if price is None else profile.with_price(price)
