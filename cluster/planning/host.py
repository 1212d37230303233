"""This machine as a hardware profile: measured matmul FLOP/s, memory bandwidth and size, per-layer overhead,
and the per-layer round trip of each Switchyard transport (`switchyard bench cluster`'s own measurement).

The device is the whole machine (its cores together). A transport's latency is the measured round trip of a
2-group cluster less the same experts' time in process (both from one `bench cluster` run), so the profile's
latency is the messaging alone; the model adds the experts' compute back. The per-layer overhead (Python and
small-op dispatch, which a roofline does not see on a tiny model) and the per-sequence overhead (what each added
sequence costs the step beyond the roofline: the CPU engine's batch building, cache gathers, sampling, small
matmuls below the measured peak) are measured on separate decodes at batch 1 and 8, not on the batch 32 the
validation checks.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from switchyard.cluster.planning.hardware import HardwareProfile, Transport

THREADS = 2


def measure_flops(size: int = 1024, repeats: int = 10) -> float:
    torch.set_num_threads(THREADS)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2.0 * size ** 3 * repeats / (time.perf_counter() - start)


def measure_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    src = np.ones(megabytes * 2 ** 20 // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    start = time.perf_counter()
    for _ in range(repeats):
        np.copyto(dst, src)
    return 2.0 * src.nbytes * repeats / (time.perf_counter() - start)  # read + write


def memory_bytes() -> float:
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def base_profile(price: float) -> HardwareProfile:
    flops = measure_flops()
    return HardwareProfile("this machine", flops, flops, measure_bandwidth(), memory_bytes(), 1, price,
                           compute_efficiency=1.0, memory_efficiency=1.0, network_efficiency=1.0,
                           layer_overhead_s=0.0, step_overhead_s=0.0,
                           source="measured by `switchyard plan --measure-host` (cluster/planning/host.py)")


def with_overhead(profile: HardwareProfile, shape, steps_s: dict[int, float]) -> HardwareProfile:
    """The host's overheads from decode steps measured at two batch sizes (`{batch: seconds}`): what the step grows
    by beyond the roofline's growth, per added sequence, is the per-sequence overhead; what the smaller batch's
    step takes beyond its roofline and its sequences' overhead is charged per layer."""
    from dataclasses import replace

    from switchyard.cluster.planning.performance import Deployment, decode_step

    if len(steps_s) != 2:
        raise ValueError(f"the host overheads need decode steps at two batch sizes; got {sorted(steps_s)}")
    small, large = sorted(steps_s)

    def roofline(batch: int) -> float:
        return decode_step(shape, profile, Deployment("single", 1, batch, 64)).step_s

    growth = (steps_s[large] - steps_s[small]) - (roofline(large) - roofline(small))
    per_sequence = max(0.0, growth) / (large - small)
    per_layer = max(0.0, steps_s[small] - roofline(small) - small * per_sequence) / shape.num_layers
    return replace(profile, layer_overhead_s=per_layer, sequence_overhead_s=per_sequence)


def with_transports(profile: HardwareProfile, in_process_ms: float, round_trips_ms: dict[str, float]) -> HardwareProfile:
    from dataclasses import replace

    loopback = 10e9  # same machine: bytes move through shared memory; the latency term carries the cost
    slower = {name: ms for name, ms in round_trips_ms.items() if ms <= in_process_ms}
    if slower:  # a round trip cannot beat the same experts in process: other work skewed the measurement
        raise ValueError(f"round trip {slower} ms is not above the experts' {in_process_ms:.2f} ms in process: the "
                         f"machine was busy with other work (load average {os.getloadavg()[0]:.1f}); measure again "
                         "on a quiet machine")
    transports = {name: Transport(name, (ms - in_process_ms) / 1000.0, loopback) for name, ms in round_trips_ms.items()}
    return replace(profile, transports=transports)


def measure_host(price: float, log=print, transports: tuple[str, ...] = ("compiled",)) -> HardwareProfile:
    from switchyard.cluster.bench.cluster import Setup, run
    from switchyard.cluster.planning.host_measure import calibration_steps_s, demo_shape
    from switchyard.configs.defaults import DEMO_MODEL_DIR

    profile = base_profile(price)
    log(f"matmul {profile.peak_flops_16bit / 1e9:.1f} GFLOP/s, memory {profile.memory_bandwidth_bytes_per_s / 1e9:.1f} GB/s")
    profile = with_overhead(profile, demo_shape(), calibration_steps_s())
    log(f"overhead {profile.layer_overhead_s * 1e3:.2f} ms a layer, {profile.sequence_overhead_s * 1e3:.2f} ms a sequence")
    rows = run(DEMO_MODEL_DIR, 32, 16, 32, [Setup(2, t, 1) for t in transports], log)
    in_process = rows[0][3]
    trips = {f"ray-{t}" if t != "handle" else "serve-handle": row[3] for t, row in zip(transports, rows[1:])}
    return with_transports(profile, in_process, trips)
