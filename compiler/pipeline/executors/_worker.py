"""The body of a node's worker process (forkserver children of the build): it takes the build's
view (sys.path, folder, environment), its own process group (so the build can kill whatever
the node started), its output on a log file, its memory limit, then runs the node and writes
the outcome for the build to read, with the resident memory the node added at its peak. Only files cross: the node's scratch folder and the
outcome."""

from __future__ import annotations

import os
import pickle
import resource
import select
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from compiler.core.host import HostInfo
from compiler.core.records import NodeResult
from compiler.pipeline.executors.base import carried_error, run_node
from compiler.pipeline.executors.memory import PeakMeter
from compiler.pipeline.graph import NodeDef, NodeGraph
from compiler.pipeline.nodes.base import NodeKind
from compiler.pipeline.nodes.context import BuildInputs, NodeContext

__all__ = ["NodeJob", "work"]

_MIB = 1 << 20


@dataclass(frozen=True)
class NodeJob:
    """Everything a worker needs to run one node: the node, its kind, the build's inputs and
    graph, the results of the nodes done so far (their outputs live in the cache), where to
    write, and the build process's cwd and environment."""

    node: NodeDef
    kind: NodeKind[Any]  # kinds hold no state: key and run may be in different processes
    inputs: BuildInputs
    graph: NodeGraph
    host: HostInfo
    results: dict[str, NodeResult]
    out: Path
    cwd: str
    environ: dict[str, str]
    memory_mb: int
    build_pid: int
    scratch: Path | None = None  # NodeContext.scratch


def _address_space(field: str = "VmSize") -> int:
    """This process's virtual memory size (`VmSize`) or its peak (`VmPeak`), in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _limit_memory(start: int, mb: int) -> tuple[int, int]:
    """Cap the address space at `start` plus `mb` MiB; the previous limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if mb:
        cap = start + mb * _MIB
        resource.setrlimit(resource.RLIMIT_AS, (cap if hard < 0 else min(cap, hard), hard))
    return soft, hard


def _die_with_build(build_pid: int) -> None:
    """SIGKILL this worker's process group (it and what its node started) when the build
    process dies, so a build killed outright leaves no worker running. (The fork server
    outlives the build while a worker runs: workers hold its lifeline.)"""
    group = os.getpgid(0)

    def stop() -> None:
        if group == os.getpid():
            os.killpg(group, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    try:
        pidfd = os.pidfd_open(build_pid)
    except ProcessLookupError:
        stop()
        return

    def watch() -> None:
        select.select([pidfd], [], [])
        stop()

    threading.Thread(target=watch, name="compile-pkg build watch", daemon=True).start()


def work(sys_path: list[str], payload: bytes, result_path: str, log_path: str) -> None:
    """Run the pickled `NodeJob` in `payload`; write its `NodeRun` to `result_path`."""
    meter = PeakMeter()  # before the job is unpickled: the node's inputs are its memory
    os.setpgid(0, 0)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    sys.path[:] = sys_path
    job: NodeJob = pickle.loads(payload)
    _die_with_build(job.build_pid)
    os.chdir(job.cwd)
    os.environ.clear()
    os.environ.update(job.environ)
    tempfile.tempdir = None  # read TMPDIR again: the node's own (ProcessExecutor.submit)
    ctx = NodeContext(job.inputs, job.graph, job.host)
    ctx.results.update(job.results)
    ctx.scratch = job.scratch
    start = _address_space()
    previous = _limit_memory(start, job.memory_mb)
    try:
        run = run_node(job.kind, job.node, ctx, job.out)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, previous)
    grew = max(0, _address_space("VmPeak") - start) // _MIB
    error = carried_error(run.error) if run.error is not None else None
    run = replace(run, error=error, grew_mib=grew, peak_rss_mib=meter.added_mib())
    tmp = Path(result_path + ".tmp")
    tmp.write_bytes(pickle.dumps(run))
    os.replace(tmp, result_path)
