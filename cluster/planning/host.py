"""This machine as a hardware profile: measured matmul FLOP/s, memory bandwidth and size, per-layer overhead,
and the per-layer round trip of each Switchyard transport (`switchyard bench cluster`'s own measurement).

The device is the whole machine (its cores together). A transport's latency is the measured round trip of a
2-group cluster less the same experts' time in process (both from one `bench cluster` run), so the profile's
latency is the messaging alone; the model adds the experts' compute back. The host's overheads, which a
roofline does not see on a tiny model, are fitted to one-process decodes at several batch sizes that leave out
the batch 32 the validation checks: a cost a layer (Python and small-op dispatch), a cost per distinct expert a
layer hits (torch's grouped GEMM on a CPU runs a small GEMM per expert, far below the measured peak), and a cost
a sequence (batch building, the paged cache's gathers, sampling over the vocabulary).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from switchyard.cluster.planning.hardware import HardwareProfile, Transport

THREADS = 2


def measure_flops(size: int = 1024, repeats: int = 10, threads: int = THREADS) -> float:
    torch.set_num_threads(threads)
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


def base_profile(price: float, threads: int = THREADS) -> HardwareProfile:
    """The machine as one device on `threads` torch threads (an engine with fewer threads is a smaller device)."""
    flops = measure_flops(threads=threads)
    return HardwareProfile("this machine", flops, flops, measure_bandwidth(), memory_bytes(), 1, price,
                           compute_efficiency=1.0, memory_efficiency=1.0, network_efficiency=1.0,
                           layer_overhead_s=0.0, step_overhead_s=0.0, shared_cores=os.cpu_count() or 1,
                           source="measured by `switchyard plan --measure-host` (cluster/planning/host.py)")


OVERHEAD_TERMS = ("layer_overhead_s", "expert_overhead_s", "sequence_overhead_s")
# The fitted model must reproduce every calibration step within this: a step that other work slowed shows as
# one the three terms cannot fit (quiet runs fit within about 20%, at batch 1 the worst)
CALIBRATION_FIT = 0.35


def overhead_counts(shape, batch: int) -> list[float]:
    """How often a one-process decode step at `batch` pays each of OVERHEAD_TERMS: once a layer, once per
    distinct expert a MoE layer's batch hits, once a sequence."""
    from switchyard.cluster.planning.performance import distinct_experts

    hit = distinct_experts(batch * shape.top_k, shape.num_experts)
    return [float(shape.num_layers), shape.num_moe_layers * hit, float(batch)]


def with_overhead(profile: HardwareProfile, shape, steps_s: dict[int, float]) -> HardwareProfile:
    """The host's overheads from decode steps measured at several batch sizes (`{batch: seconds}`): the step less
    its roofline, fitted by least squares to a cost a layer, a cost per distinct expert hit and a cost a
    sequence, none below zero (a term the data would make negative is left out and the rest refitted)."""
    from dataclasses import replace
    from itertools import combinations

    from switchyard.cluster.planning.performance import Deployment, decode_step

    if len(steps_s) < len(OVERHEAD_TERMS):
        raise ValueError(f"the host overheads need decode steps at {len(OVERHEAD_TERMS)} or more batch sizes; "
                         f"got {sorted(steps_s)}")
    batches = sorted(steps_s)
    counts = np.array([overhead_counts(shape, b) for b in batches])
    steps = np.array([steps_s[b] for b in batches])
    roofline = np.array([decode_step(shape, profile, Deployment("single", 1, b, 64)).step_s for b in batches])
    beyond = steps - roofline
    best, best_residual = np.zeros(len(OVERHEAD_TERMS)), float(np.sum(beyond ** 2))
    for size in range(1, len(OVERHEAD_TERMS) + 1):
        for terms in combinations(range(len(OVERHEAD_TERMS)), size):
            fit = np.linalg.lstsq(counts[:, terms], beyond, rcond=None)[0]
            residual = float(np.sum((counts[:, terms] @ fit - beyond) ** 2))
            if np.all(fit >= 0) and residual < best_residual - 1e-18:
                best, best_residual = np.zeros(len(OVERHEAD_TERMS)), residual
                best[list(terms)] = fit
    worst = float(np.max(np.abs((roofline + counts @ best) / steps - 1.0)))
    if worst > CALIBRATION_FIT:
        raise ValueError(f"the decode steps at batches {batches} ({', '.join(f'{1e3 * steps_s[b]:.1f}' for b in batches)} "
                         f"ms) fit no host model within {CALIBRATION_FIT:.0%} (worst {worst:.0%} off): other work slowed "
                         f"some of them (load average {os.getloadavg()[0]:.1f}); measure again on a quiet machine")
    return replace(profile, **dict(zip(OVERHEAD_TERMS, best.tolist())))


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
    log(f"overhead {profile.layer_overhead_s * 1e3:.2f} ms a layer, {profile.expert_overhead_s * 1e3:.3f} ms an "
        f"expert hit, {profile.sequence_overhead_s * 1e3:.3f} ms a sequence")
    rows = run(DEMO_MODEL_DIR, 32, 16, 32, [Setup(2, t, 1) for t in transports], log)
    in_process = rows[0][3]
    trips = {f"ray-{t}" if t != "handle" else "serve-handle": row[3] for t, row in zip(transports, rows[1:])}
    return with_transports(profile, in_process, trips)
