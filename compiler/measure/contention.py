"""How busy the rest of the host is: the CPU time other work takes while this build waits.

The 1-minute load average cannot say it: it counts runnable threads, this build's own among
them, and decays over a minute. A sweep's paired workers run two ONNX Runtime or OpenVINO
processes whose spinning threads alone put it above the cpu count of a 2-vCPU host, so every
sweep there read as "busy" and none was adopted (ppocr_cls on a quiet AMX host, 2026-12-02:
load 2.9-3.7 on 2 cpus, from the sweep's own workers). Instead, the build sleeps for a short
window with its measurement workers stopped and reads /proc/stat: the busy time (user, nice,
system, irq, softirq, and steal, the time the hypervisor gave the vCPUs to other guests) all
CPUs accrued over the window is other work's (`TunedSettings.busy` judges it). Linux only;
elsewhere nothing is known (None).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["busy_jiffies", "others_cpus", "own_jiffies"]

_STAT = Path("/proc/stat")
# /proc/stat's cpu line: user nice system idle iowait irq softirq steal guest guest_nice;
# guest time is already inside user/nice, idle and iowait are not busy
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


def busy_jiffies(stat: str) -> int | None:
    """The busy clock ticks of all CPUs together in a /proc/stat text (its `cpu` line)."""
    for line in stat.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = [int(v) for v in parts[1:]]
            return sum(values[i] for i in _BUSY_FIELDS if i < len(values))
    return None


def own_jiffies(stat: str) -> int:
    """utime + stime of a /proc/<pid>/stat text: every thread of that process."""
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return int(fields[11]) + int(fields[12])


def others_cpus(window_s: float = 0.3) -> float | None:
    """CPUs' worth of work the rest of the host did over `window_s` while this process slept
    (call it with no measurement of its own running); this process's own threads are left
    out (a runtime's pool spinning after an in-process parity run: OpenVINO's read as 1.0-1.4
    cpus of a 2-cpu host). None where /proc is unreadable."""
    own = Path("/proc/self/stat")
    try:
        before, mine = busy_jiffies(_STAT.read_text()), own_jiffies(own.read_text())
        t0 = time.perf_counter()
        time.sleep(window_s)
        after, mine_after = busy_jiffies(_STAT.read_text()), own_jiffies(own.read_text())
        elapsed = time.perf_counter() - t0
    except (OSError, ValueError, IndexError):
        return None
    if before is None or after is None or elapsed <= 0:
        return None
    others = (after - before) - (mine_after - mine)
    return round(max(0, others) / os.sysconf("SC_CLK_TCK") / elapsed, 2)
