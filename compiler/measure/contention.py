"""How busy the rest of the host is: the CPU time other work takes while this build waits.

The 1-minute load average cannot say it: it counts runnable threads, this build's own among
them, and decays over a minute. A sweep's paired workers run two ONNX Runtime or OpenVINO
processes whose spinning threads alone put it above the cpu count of a 2-vCPU host, so every
sweep there read as "busy" and none was adopted (ppocr_cls on a quiet AMX host, 2026-12-02:
load 2.9-3.7 on 2 cpus, from the sweep's own workers). Instead, the build sleeps for a short
window with its measurement workers stopped and reads /proc/stat: the busy time (user, nice,
system, irq, softirq, and steal, the time the hypervisor gave the vCPUs to other guests) the
CPUs this process may run on accrued over the window, less this process's own, is other
work's (`TunedSettings.busy` judges it). Linux only; elsewhere nothing is known (None).
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OtherWork", "OtherWorkMeter", "busy_jiffies", "other_work", "own_jiffies"]

_STAT = Path("/proc/stat")
# /proc/stat's cpu line: user nice system idle iowait irq softirq steal guest guest_nice;
# guest time is already inside user/nice, idle and iowait are not busy
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


def busy_jiffies(stat: str, cpus: Collection[int] | None = None) -> int | None:
    """The busy clock ticks in a /proc/stat text: of the CPUs numbered `cpus` (its `cpuN`
    lines), or of all of them (its `cpu` line)."""
    total, seen = 0, False
    for line in stat.splitlines():
        parts = line.split()
        if not parts or not parts[0].startswith("cpu"):
            continue
        name = parts[0]
        if (cpus is None and name == "cpu") or (
            cpus is not None and name[3:].isdigit() and int(name[3:]) in cpus
        ):
            values = [int(v) for v in parts[1:]]
            total += sum(values[i] for i in _BUSY_FIELDS if i < len(values))
            seen = True
    return total if seen else None


def own_jiffies(stat: str) -> int:
    """utime + stime of a /proc/<pid>/stat text: every thread of that process."""
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return int(fields[11]) + int(fields[12])


@dataclass(frozen=True)
class OtherWork:
    """CPUs' worth of other work (`cpus`) on the `of` CPUs this process may run on."""

    cpus: float
    of: int


def other_work(window_s: float = 0.3) -> OtherWork | None:
    """What the rest of the host did over `window_s` on the CPUs this process may use (its
    affinity: a container pinned to 2 of a host's 64 CPUs reads those 2), while this process
    slept; call it with no measurement of its own running. This process's own threads are
    left out (a runtime's pool spinning after an in-process parity run: OpenVINO's read as
    1.0-1.4 cpus of a 2-cpu host). None where /proc is unreadable."""
    with OtherWorkMeter() as meter:
        time.sleep(window_s)
    return meter.result


class OtherWorkMeter:
    """Other work over a stretch of this process's own measuring, not a quiet window: the busy
    time of the CPUs this process may use, less this process's and its reaped children's
    (`os.times`), so every worker the stretch starts must be reaped by its end (the latency
    workers are: `WorkerProcess.close`). `result` after the `with` block; None where /proc is
    unreadable. A 2-vCPU guest whose second vCPU the hypervisor lends elsewhere reads it as
    steal, which counts as other work."""

    def __init__(self) -> None:
        try:
            self._cpus: set[int] | None = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self._cpus = None
        self._start: tuple[int, float, float] | None = None
        self.result: OtherWork | None = None

    def _read(self) -> tuple[int, float, float] | None:
        try:
            busy = busy_jiffies(_STAT.read_text(), self._cpus)
        except OSError:
            return None
        if busy is None:
            return None
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return busy, own, time.perf_counter()

    def __enter__(self) -> OtherWorkMeter:
        self._start = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._read()
        if self._start is None or end is None or end[2] <= self._start[2]:
            return
        busy_s = (end[0] - self._start[0]) / os.sysconf("SC_CLK_TCK")
        others = busy_s - (end[1] - self._start[1])
        of = len(self._cpus) if self._cpus else os.cpu_count() or 1
        self.result = OtherWork(round(max(0.0, others) / (end[2] - self._start[2]), 2), of)
