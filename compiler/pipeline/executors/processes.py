"""The process executor: each node in a worker process of its own (a forkserver child, so it
starts with the node kinds already imported), at most `workers` at once.

A worker shares nothing with the build but files: it reads its parents' outputs from their
cache entries and writes its own into the scratch folder the build gave it; the build process
hashes and commits it, so the cache's integrity checks and locks are the ones an in-process
build uses. A worker runs in its own process group with its output on a log file; one that is
killed (a signal, the OOM killer), exceeds `wall_s` (its group is killed) or its memory limit,
or exits without an outcome fails only its node, with the cause and the log's last lines.
A worker dies with the build process (_worker.py watches it), so none outlives a killed build.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import pickle
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from multiprocessing import forkserver, spawn
from multiprocessing.connection import wait as wait_for
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from compiler.core.records import NodeResult
from compiler.pipeline.executors._worker import NodeJob, work
from compiler.pipeline.executors.base import OUT_OF_MEMORY, NodeRun, OnStart, pickle_job
from compiler.pipeline.executors.memory import resident_mib
from compiler.pipeline.graph import NodeDef
from compiler.pipeline.nodes.base import NodeKind
from compiler.pipeline.nodes.context import NodeContext

__all__ = ["MAIN_ENV", "ProcessExecutor", "usable_cores"]

# imported once by the fork server, so each worker starts with the node kinds, their
# libraries and the build's main script loaded (_forkserver.py says why the script)
_PRELOAD = ["compiler.pipeline.executors._forkserver"]
MAIN_ENV = "COMPILE_PKG_FORKSERVER_MAIN"  # the build's main script, for the fork server
_TAIL_LINES = 20


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers and taskset
    narrow), not the host's count."""
    return len(os.sched_getaffinity(0))


@dataclass
class _Job:
    node: str
    process: BaseProcess
    result: Path
    log: Path
    tmp: Path  # the worker's TMPDIR
    deadline: float | None
    start_mib: int = 0  # resident at fork: the fork server's pages, shared, not the node's
    timed_out: bool = field(default=False)


def _kill_group(job: _Job) -> None:
    """SIGKILL a running worker's process group (what the node started too), then the
    worker. Only while it runs: once the fork server has reaped it, its pid may be reused."""
    pid = job.process.pid
    if pid is not None and job.process.exitcode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    job.process.kill()


def _tail(log: Path) -> str:
    try:
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - 65536))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-_TAIL_LINES:])


class ProcessExecutor:
    """At most `workers` nodes at once (0: `usable_cores()`), each in its own worker; a
    worker may grow by `memory_mb` MiB of address space (0: no limit) and run `wall_s`
    seconds (0: no limit). `on_start(node id, pid)` hears of each worker started."""

    def __init__(
        self,
        workers: int = 0,
        memory_mb: int = 0,
        wall_s: float = 0.0,
        on_start: OnStart | None = None,
    ) -> None:
        self.slots = workers or usable_cores()
        self.memory_mb = memory_mb
        self.wall_s = wall_s
        self._on_start = on_start
        self._mp = multiprocessing.get_context("forkserver")
        main = spawn.get_preparation_data("compile-pkg").get("init_main_from_path")
        if main:  # read when the fork server starts (the first worker of this process)
            os.environ[MAIN_ENV] = json.dumps({"path": main, "argv": sys.argv})
        self._mp.set_forkserver_preload(_PRELOAD)
        # started now, so its imports overlap the build's own preparation (source checks,
        # graph, host probe) instead of delaying the first node; a no-op once it runs
        forkserver.ensure_running()
        self._running: dict[str, _Job] = {}

    def submit(self, node: NodeDef, kind: NodeKind[Any], ctx: NodeContext, out: Path) -> None:
        # the worker's temporary files (a library's own, e.g. ONNX Runtime's quantizer's) go
        # beside its output too: a worker killed mid-node (wall-time or memory limit, a
        # build stopped) leaves none in the system's temporary folder
        tmp = out.parent / "tmp"
        tmp.mkdir(exist_ok=True)
        job = NodeJob(
            node=node,
            kind=kind,
            inputs=ctx.inputs,
            graph=ctx.graph,
            host=ctx.host,
            results=dict(ctx.results),
            out=out.absolute(),
            cwd=os.getcwd(),
            environ={**os.environ, "TMPDIR": str(tmp.absolute())},
            memory_mb=self.memory_mb,
            build_pid=os.getpid(),
            scratch=ctx.scratch,
        )
        # beside the node's output, in the build's scratch space: removed before the entry
        # is committed, and collected with the scratch of a build that was killed
        result, log = out.parent / "worker-outcome.pkl", out.parent / "worker.log"
        payload = pickle_job(job, node, kind, "a worker process")
        args = (list(sys.path), payload, str(result), str(log))
        process = self._mp.Process(target=work, args=args, name=f"compile-pkg {node.id}")
        process.start()
        deadline = time.monotonic() + self.wall_s if self.wall_s else None
        start = resident_mib(process.pid) if process.pid is not None else None
        self._running[node.id] = _Job(node.id, process, result, log, tmp, deadline, start or 0)
        if self._on_start is not None and process.pid is not None:
            self._on_start(node.id, process.pid)

    def resident_mib(self, node_id: str) -> int | None:
        """What the node's worker holds now beyond what it was forked with (not what its own
        child processes hold); None once it is gone."""
        job = self._running.get(node_id)
        now = resident_mib(job.process.pid) if job and job.process.pid is not None else None
        return None if now is None or job is None else max(0, now - job.start_mib)

    def wait(self) -> list[tuple[str, NodeRun]]:
        if not self._running:
            raise RuntimeError("wait() with no node running")
        while True:
            deadlines = [j.deadline for j in self._running.values() if j.deadline is not None]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            wait_for([j.process.sentinel for j in self._running.values()], timeout)
            done = []
            for job in list(self._running.values()):
                if job.process.exitcode is None and job.deadline is not None:
                    if time.monotonic() >= job.deadline:
                        job.timed_out = True
                        _kill_group(job)
                        job.process.join()
                if job.process.exitcode is not None:
                    del self._running[job.node]
                    done.append((job.node, self._collect(job)))
            if done:
                return done

    def _collect(self, job: _Job) -> NodeRun:
        job.process.join()
        tail = _tail(job.log)
        self._forward(job.log)
        try:
            run = self._outcome(job, tail)
        finally:
            job.result.unlink(missing_ok=True)
            job.log.unlink(missing_ok=True)
            shutil.rmtree(job.tmp, ignore_errors=True)
        return run

    def _outcome(self, job: _Job, tail: str) -> NodeRun:
        shown = f"last lines of the worker's output:\n{tail}\n" if tail else ""
        code = job.process.exitcode
        if job.result.is_file() and not job.timed_out:
            run: NodeRun = pickle.loads(job.result.read_bytes())
            if run.failure is None or run.failure.status != "failed":
                return run
            reason, trace = run.failure.reason, run.failure.traceback
            if self.memory_mb:
                limit = f"executor.memory_mb={self.memory_mb}"
                if isinstance(run.error, MemoryError) or OUT_OF_MEMORY.search(reason + trace):
                    reason = f"exceeded its memory limit ({limit}): {reason}"
                else:  # a library that cannot map memory says so in its own words
                    reason += f" (its worker's address space grew by {run.grew_mib} MiB; {limit})"
            failure = run.failure.model_copy(update={"reason": reason, "traceback": trace + shown})
            # under a memory limit, a failure may be the limit's: not remembered
            return replace(run, failure=failure, repeatable=run.repeatable and not self.memory_mb)
        pid = job.process.pid
        if job.timed_out:
            limit = f"executor.wall_s={self.wall_s:g}"
            reason = f"ran past its wall-time limit ({limit}); worker process {pid} killed"
        elif code is not None and code < 0:
            name = signal.Signals(-code).name
            reason = f"worker process {pid} killed by {name}"
            if self.memory_mb:
                reason += f" (its memory limit is executor.memory_mb={self.memory_mb})"
        else:
            reason = f"worker process {pid} exited with status {code} before it finished"
        return NodeRun(failure=NodeResult(status="failed", reason=reason, traceback=shown))

    def _forward(self, log: Path) -> None:
        """The worker's output goes where this process's stdout goes (the CLI keeps
        third-party output there: its log file, or stderr with -v)."""
        try:
            data = log.read_bytes()
        except OSError:
            return
        if data:
            sys.stdout.flush()
            with contextlib.suppress(OSError), open(1, "wb", closefd=False) as stdout:
                stdout.write(data)

    def close(self) -> None:
        for job in self._running.values():
            _kill_group(job)
            job.process.join()
        self._running.clear()
