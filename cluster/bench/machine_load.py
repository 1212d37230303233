"""Was the machine quiet during a benchmark run? The load average, and the CPU time others took.

The 1-min load average alone cannot say whose work it is: it counts every runnable thread on the machine,
the run's own (server, load tool) included, and it carries the previous run for a minute or more. So each run
is judged on two readings (Linux /proc):

- before it starts: the 1-min load average, less what this benchmark's earlier runs leave in it. The kernel's
  1-min figure is an exponential average that decays as exp(-t / 60 s), so a run that ended `t` seconds ago
  with load `L` still accounts for `L * exp(-t / 60)`. More than `QUIET_LOAD` above that is other work.
- while it runs: the machine's busy CPU seconds (/proc/stat: user, nice, system, irq, softirq; steal is the
  hypervisor's and is reported apart) less the run's own (the server's whole process tree, reaped children
  included, and the load tool's), per second of the run. More than `OTHER_CORES` of a core is other work.
"""

from __future__ import annotations

import math
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from switchyard.cluster.bench.cpu import process_tree

QUIET_LOAD = 0.5  # 1-min load above what earlier runs explain, before a run starts
OTHER_CORES = 0.25  # cores that other processes used on average during a run
LOAD_WINDOW_S = 60.0  # the 1-min load average's time constant
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuTimes:
    """Machine-wide CPU seconds so far, summed over cores."""
    busy: float
    steal: float


def machine_cpu() -> CpuTimes:
    # /proc/stat "cpu  user nice system idle iowait irq softirq steal ..."
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return CpuTimes((user + nice + system + irq + softirq) / _TICKS, steal / _TICKS)


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of `root` and every live process below it, with the children each has reaped."""
    total = 0
    for pid in process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime (stat fields 14-17)
    return total / _TICKS


def driver_cpu_seconds() -> float:
    """CPU seconds of this process (the benchmark's driver: warm-up requests) and of its children that have
    exited and been waited for (the load tool's runs)."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


@dataclass(frozen=True)
class RunLoad:
    """What one run read of the machine (loads are the 1-min average; cores are averages over the run)."""
    load_before: float
    load_after: float
    expected_before: float  # what this benchmark's earlier runs still leave in `load_before`
    seconds: float
    own_cores: float  # the server's tree, the load tool and this driver
    other_cores: float  # every other process on the machine
    steal_cores: float  # taken by the hypervisor for other machines


def expected_residual(previous_load_after: float | None, seconds_since: float) -> float:
    """What a run that ended `seconds_since` ago with 1-min load `previous_load_after` still leaves in it."""
    if previous_load_after is None:
        return 0.0
    return previous_load_after * math.exp(-seconds_since / LOAD_WINDOW_S)


def judge(load: RunLoad) -> list[str]:
    """Reasons to distrust the run's figures (none when the machine ran only the run)."""
    reasons = []
    if load.load_before - load.expected_before > QUIET_LOAD:
        reasons.append(f"1-min load {load.load_before:.2f} before the run, {load.expected_before:.2f} of it from "
                       f"earlier runs: other work was running")
    if load.other_cores > OTHER_CORES:
        reasons.append(f"other processes used {load.other_cores:.2f} cores during the run "
                       f"(the run itself {load.own_cores:.2f})")
    return reasons


def quiet_before(loads: list[RunLoad], threshold: float = 1.0) -> bool:
    """Whether the machine was quiet before every run (1-min load under `threshold`, earlier runs included)."""
    return bool(loads) and all(load.load_before < threshold for load in loads)


class RunMeter:
    """Reads the machine around one run: `start()` before the server starts, `loaded()` when the load tool has
    finished, `stop(server_pid)` just before the server is stopped."""

    def __init__(self, previous_load_after: float | None, previous_end: float | None):
        self.previous_load_after, self.previous_end = previous_load_after, previous_end

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.load_before = os.getloadavg()[0]
        self.cpu0, self.driver0 = machine_cpu(), driver_cpu_seconds()

    def loaded(self) -> None:
        self.load_after, self.loaded_at = os.getloadavg()[0], time.monotonic()

    def stop(self, server_pid: int) -> RunLoad:
        server = tree_cpu_seconds(server_pid)
        cpu, driver = machine_cpu(), driver_cpu_seconds()
        seconds = time.monotonic() - self.t0
        own = server + driver - self.driver0
        since = self.t0 - self.previous_end if self.previous_end is not None else 0.0
        if not hasattr(self, "load_after"):
            self.loaded()
        return RunLoad(self.load_before, self.load_after,
                       expected_residual(self.previous_load_after, since), seconds, own / seconds,
                       max(0.0, cpu.busy - self.cpu0.busy - own) / seconds, (cpu.steal - self.cpu0.steal) / seconds)
