"""The parent's side of a latency worker (compiler/measure/latency_worker.py): start it, ask
for blocks of timed runs, and turn its death into a typed failure instead of a hang or a
zombie.

Each worker runs in a session of its own; `close()` asks it to exit, then kills its process
group and reaps it, whatever happened. A worker that goes silent past a deadline is killed
and reported as timed out.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, NoReturn

from compiler.core.contract import Contract
from compiler.core.runtime import RunnerInfo
from compiler.core.settings import OnnxRuntimeSettings, RuntimeSettings, settings_to_json
from compiler.measure.latency_worker import PROTOCOL

__all__ = ["Contender", "WorkerFailed", "WorkerProcess", "reference_contender"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOAD_TIMEOUT_S = 600.0  # an OpenVINO or TVM load of a large model compiles kernels


@dataclass(frozen=True)
class Contender:
    """What one worker loads: an artifact folder with its runtime settings."""

    name: str
    backend: str
    directory: Path
    runtime: RuntimeSettings
    cache_dir: Path | None = None
    role: Literal["artifact", "reference"] = "artifact"


def reference_contender(model: Path, threads: int = 0) -> Contender:
    """The reference: the normalized fp32 model on ONNX Runtime CPU, default optimizations
    (as targets.runner.reference_runner opens it)."""
    settings = OnnxRuntimeSettings(model=model.name, intra_op_num_threads=threads)
    return Contender("reference", "onnxruntime", model.parent, settings, role="reference")


class WorkerFailed(Exception):
    """The worker could not load or run its contender, died, or went silent."""

    def __init__(self, contender: Contender, stage: str, reason: str) -> None:
        super().__init__(f"{contender.name}: {stage}: {reason}")
        self.contender, self.stage, self.reason = contender, stage, reason


@dataclass
class WorkerProcess:
    """A started worker (use as a context manager). `ready` holds what it reported after
    loading: the runner's description, load time and warm-up run times."""

    contender: Contender
    proc: subprocess.Popen[bytes]
    stderr: IO[bytes]
    ready: dict[str, Any] = field(default_factory=dict)
    _buffer: bytes = b""

    @classmethod
    def start(
        cls,
        contender: Contender,
        contract: Contract,
        feeds: Path,
        workdir: Path,
        *,
        threads: int,
        warmup: int,
    ) -> WorkerProcess:
        """A worker started and loaded: `spawn`, then `load`."""
        worker = cls.spawn(contender, contract, feeds, workdir, threads=threads, warmup=warmup)
        worker.load()
        return worker

    @classmethod
    def spawn(
        cls,
        contender: Contender,
        contract: Contract,
        feeds: Path,
        workdir: Path,
        *,
        threads: int,
        warmup: int,
    ) -> WorkerProcess:
        """A worker process started: its interpreter starts and imports its runtime while the
        caller goes on (spawn two, then load one after the other: the second's start, ~0.3 s,
        is paid while the first starts, and no load or warm-up shares the cores); it loads
        nothing until `load`."""
        job = {
            "protocol": PROTOCOL,
            "backend": contender.backend,
            "dir": str(contender.directory.resolve()),
            "runtime": settings_to_json(contender.runtime),
            "contract": contract.model_dump(mode="json"),
            "feeds": str(feeds.resolve()),
            "threads": threads,
            "cache_dir": str(contender.cache_dir) if contender.cache_dir else "",
            "warmup": warmup,
        }
        fd, name = tempfile.mkstemp(suffix=".json", dir=workdir)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(job, f)
        stderr = tempfile.TemporaryFile(dir=workdir)
        path = os.environ.get("PYTHONPATH", "")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), path) if p),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "compiler.measure.latency_worker", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            start_new_session=True,  # its own process group: close() can end all of it
        )
        return cls(contender, proc, stderr)

    def load(self) -> None:
        """Load the contender and warm it up; `ready` then says what it reported. Raises
        WorkerFailed (the worker closed) where it cannot."""
        try:
            try:
                self._send({"op": "load"})
            except OSError:  # it is gone: say how it died
                self._died("load")
            self.ready = self._reply("load", LOAD_TIMEOUT_S)["ready"]
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def describe(self) -> RunnerInfo:
        return dict(self.ready.get("describe", {}))

    @property
    def run_s(self) -> float:
        """A typical run's time: the median of the runs timed after the warm-up."""
        times = sorted(self.ready.get("steady_s") or self.ready.get("warmup_s") or [0.0])
        return float(times[len(times) // 2])

    def block(self, runs: int, settle_s: float, timeout_s: float | None = None) -> list[float]:
        """`runs` timed runs after a pause and one untimed run (seconds each). A worker that
        has not answered by `timeout_s` (default: generous, from its warm-up) is killed."""
        try:
            self._send({"op": "block", "runs": runs, "settle_s": settle_s})
        except OSError:  # it is gone: say how it died
            self._died("run")
        timeout = timeout_s or 60.0 + settle_s + 20.0 * runs * max(self.run_s, 1e-3)
        return [float(t) for t in self._reply("run", timeout)["times_s"]]

    def close(self, *, ask: bool = True) -> None:
        """Ask the worker to exit (unless not `ask`: it is stuck); kill its process group if
        it does not; always reap it."""
        if ask and self.proc.returncode is None:
            try:
                self._send({"op": "exit"})
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError):  # unflushed bytes to a dead worker
                    stream.close()
        self.stderr.close()

    # ------------------------------------------------------------------ protocol

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def _reply(self, stage: str, timeout: float) -> dict[str, Any]:
        line = self._readline(stage, timeout)
        message: dict[str, Any] = json.loads(line)
        if not message.get("ok"):
            raise WorkerFailed(
                self.contender, message.get("stage", stage), message.get("error", "?")
            )
        return message

    def _readline(self, stage: str, timeout: float) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close(ask=False)
                raise WorkerFailed(self.contender, stage, f"no answer in {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:  # end of file: the worker died
                self._died(stage)
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _died(self, stage: str) -> NoReturn:
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        reason = self._death()
        self.close()
        raise WorkerFailed(self.contender, stage, reason)

    def _death(self) -> str:
        code = self.proc.returncode
        if code is None:
            what = "closed its reply channel"
        elif code < 0:
            try:
                what = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                what = f"killed by signal {-code}"
        else:
            what = f"exited with status {code}"
        try:
            self.stderr.seek(0)
            tail = self.stderr.read().decode(errors="replace").strip().splitlines()[-3:]
        except (OSError, ValueError):
            tail = []
        return "the worker process " + what + (": " + " | ".join(tail) if tail else "")
