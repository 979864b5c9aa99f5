"""Memory figures for running nodes side by side on one host: what a worker added at its peak
(measured in the worker), what a running worker holds now, and what the host (or the cgroup
the build runs in) can still give. The scheduler admits a node only when its estimated peak
fits in what is left (`MemoryGate`), so two calibrations that each take most of the host run
one after the other instead of one being killed by the OOM killer.

All figures are MiB read from /proc and /sys (Linux); a figure that cannot be read is None
(or 0 for a measurement), and an unknown figure never holds a node back.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MemoryGate", "PeakMeter", "available_mib", "cgroup_room_mib", "resident_mib"]

_KIB_PER_MIB = 1024
_MIB = 1 << 20
_CGROUP_ROOT = Path("/sys/fs/cgroup")
# (limit file, usage file, reclaimable page-cache entry of memory.stat) per cgroup version
_Files = tuple[str, str, str]
_V2: _Files = ("memory.max", "memory.current", "inactive_file")
_V1: _Files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
_NO_LIMIT = 1 << 60  # v1 writes "no limit" as a huge page-aligned number, v2 as "max"


def _field_kib(path: str, key: str) -> int | None:
    """A `kB` field of a /proc file (status: VmRSS, VmHWM; meminfo: MemAvailable); None
    when it cannot be read (a process gone)."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def resident_mib(pid: int) -> int | None:
    """Process `pid`'s resident memory now (pages it shares with its parent included)."""
    kib = _field_kib(f"/proc/{pid}/status", "VmRSS")
    return None if kib is None else kib // _KIB_PER_MIB


class PeakMeter:
    """Made first thing in a worker, read once its node is done: the most resident memory the
    node added, its own (`VmHWM`, the process's high-water mark, less the resident memory it
    started with: a forked worker starts with the fork server's pages, which are shared, not
    the node's) plus the largest process it started and waited for (ONNX Runtime's
    quantization tools, TVM's compile, latency workers)."""

    def __init__(self) -> None:
        self.start_kib = _field_kib("/proc/self/status", "VmRSS") or 0

    def added_mib(self) -> int:
        peak = _field_kib("/proc/self/status", "VmHWM") or 0
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
        return (max(0, peak - self.start_kib) + children) // _KIB_PER_MIB


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _reclaimable(folder: Path, key: str) -> int:
    try:
        for line in (folder / "memory.stat").read_text(encoding="ascii").splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _cgroup_folders(cgroup_file: Path, root: Path) -> list[tuple[Path, _Files]]:
    """The memory cgroup folders a process is in (its /proc/PID/cgroup), from its own up to
    the hierarchy's root, each with its version's file names."""
    try:
        lines = cgroup_file.read_text(encoding="ascii").splitlines()
    except OSError:
        return []
    found: list[tuple[Path, _Files]] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        controllers, rel = parts[1], parts[2].lstrip("/")
        if controllers == "":  # v2: the unified hierarchy, mounted alone or under unified/
            tops, names = [root, root / "unified"], _V2
        elif "memory" in controllers.split(","):
            tops, names = [root / "memory"], _V1
        else:
            continue
        for top in tops:
            folder = top / rel
            if not (top / names[1]).exists() and not (folder / names[1]).exists():
                continue
            while True:
                found.append((folder, names))
                if folder == top or top not in folder.parents:
                    break
                folder = folder.parent
    return found


def cgroup_room_mib(
    cgroup_file: Path = Path("/proc/self/cgroup"), root: Path = _CGROUP_ROOT
) -> int | None:
    """What the tightest memory cgroup limit above a process leaves: its limit less its usage
    (page cache the kernel can reclaim not counted as used); None without a limit."""
    rooms = []
    for folder, (limit_file, usage_file, cache_key) in _cgroup_folders(cgroup_file, root):
        limit = _read_int(folder / limit_file)
        usage = _read_int(folder / usage_file)
        if limit is None or usage is None or limit >= _NO_LIMIT:
            continue
        rooms.append(max(0, limit - usage + _reclaimable(folder, cache_key)) // _MIB)
    return min(rooms, default=None)


def available_mib() -> int | None:
    """Memory a new node could take now: the kernel's `MemAvailable`, or less where a cgroup
    limit leaves less; None when neither can be read."""
    kib = _field_kib("/proc/meminfo", "MemAvailable")
    host = None if kib is None else kib // _KIB_PER_MIB
    figures = [f for f in (host, cgroup_room_mib()) if f is not None]
    return min(figures, default=None)


@dataclass(frozen=True)
class MemoryGate:
    """Admits a node when its estimated peak, what the running nodes may still grow by, and
    `margin_mib` fit in `available()` (MiB, None: unknown, which admits). The scheduler
    starts a node regardless when nothing else runs: a node bigger than the host runs alone,
    as it would in-process."""

    margin_mib: int = 1024
    available: Callable[[], int | None] = field(default=available_mib)

    def shortfall(self, need_mib: float, growth_mib: float) -> tuple[int, int] | None:
        """(MiB missing, MiB available now) when `need_mib` does not fit beside nodes that
        may still grow by `growth_mib`; None when it fits or nothing is known."""
        free = self.available()
        if free is None:
            return None
        missing = need_mib + growth_mib + self.margin_mib - free
        return (int(missing) + 1, free) if missing > 0 else None
