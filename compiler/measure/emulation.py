"""Verify arm (aarch64) artifacts on an x86-64 host by running the aarch64 builds of their
runtimes under qemu user-mode emulation.

`scripts/setup_emulation.sh` builds the environment once (qemu-aarch64, an arm64 sysroot
with Python 3.11, aarch64 wheels). This module finds it and runs artifacts in one emulated
Python (`_emulated_worker.py`, which loads each with its backend's runtime module: importing
a runtime costs seconds under emulation). compiler/packaging/emulated.py turns the outputs
of a package's arm artifacts into parity records marked `mode: emulated`. Nothing is timed:
latency under emulation says nothing about an arm CPU.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.errors import BackendUnavailable
from compiler.core.feeds import read_feeds_npz, write_feeds_npz
from compiler.core.host import HostInfo
from compiler.core.settings import RuntimeSettings, settings_to_json
from compiler.measure._emulated_worker import PROTOCOL

__all__ = [
    "DEFAULT_CPU",
    "EMU_DIR_ENV",
    "SETUP_HINT",
    "ArtifactJob",
    "EmulatedResult",
    "EmulationEnv",
    "default_environment_dir",
    "emulated_host",
    "locate_environment",
    "run_emulated",
]

EMU_DIR_ENV = "COMPILE_PKG_EMU_DIR"
LAYOUT = 1  # must match LAYOUT in scripts/setup_emulation.sh
DEFAULT_CPU = "neoverse-n1"  # qemu's default `max` enables SVE/SME: slow and unrepresentative
SETUP_HINT = "set up with scripts/setup_emulation.sh"
SUPPORTED_ARCHS = ("aarch64",)
WORKER = Path(__file__).with_name("_emulated_worker.py")
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the worker imports the runtime modules


def default_environment_dir(arch: str = "aarch64") -> Path:
    """$COMPILE_PKG_EMU_DIR, else ~/.cache/compile-pkg/emu-<arch>-v<layout>."""
    if os.environ.get(EMU_DIR_ENV):
        return Path(os.environ[EMU_DIR_ENV]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "compile-pkg" / f"emu-{arch}-v{LAYOUT}"


@dataclass(frozen=True)
class EmulationEnv:
    """A built emulation environment: qemu, sysroot, the aarch64 site folder and its versions."""

    root: Path
    arch: str
    qemu: Path
    sysroot: Path
    site: Path
    qemu_version: str  # "10.0.2"
    qemu_build: str  # qemu's own --version line, with the Debian package version
    python: str
    runtimes: dict[str, str]
    default_cpu: str = DEFAULT_CPU

    @property
    def python_exe(self) -> Path:
        return self.sysroot / "usr" / "bin" / "python3.11"

    def command(self, script: Path, *args: str) -> list[str]:
        return [str(self.qemu), "-L", str(self.sysroot), str(self.python_exe), str(script), *args]

    def environ(self, cpu: str) -> dict[str, str]:
        """A clean environment: nothing of the host's Python setup leaks into the emulated one;
        the project root is on the path for the worker's bare imports (runtime modules)."""
        return {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": os.environ.get("HOME", "/tmp"),
            "QEMU_CPU": cpu,
            "PYTHONPATH": os.pathsep.join((str(self.site), str(PROJECT_ROOT))),
            "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "TVM_USE_RUNTIME_LIB": "1",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        }

    def describe(self, cpu: str) -> str:
        """The `emulated` field of the records: emulator, its version and the emulated CPU."""
        return f"qemu-{self.arch} {self.qemu_version} (cpu {cpu})"


def _unavailable(reason: str) -> BackendUnavailable:
    return BackendUnavailable("aarch64 emulation", reason, install=SETUP_HINT)


def locate_environment(arch: str = "aarch64", root: Path | None = None) -> EmulationEnv:
    """The environment at `root` (default: default_environment_dir), checked to be complete."""
    if arch not in SUPPORTED_ARCHS:
        raise _unavailable(f"no emulation for arch '{arch}'; supported: {list(SUPPORTED_ARCHS)}")
    root = root if root is not None else default_environment_dir(arch)
    info_path = root / "env.json"
    if not info_path.is_file():
        where = f"${EMU_DIR_ENV}={root}" if os.environ.get(EMU_DIR_ENV) else str(root)
        raise _unavailable(f"no emulation environment at {where} (no env.json)")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _unavailable(f"{info_path} is unreadable ({exc}); rebuild it with --force") from exc
    if info.get("layout") != LAYOUT or info.get("arch") != arch:
        raise _unavailable(
            f"{root} has layout {info.get('layout')} for {info.get('arch')}, this compile-pkg "
            f"needs layout {LAYOUT} for {arch}"
        )
    env = EmulationEnv(
        root=root,
        arch=arch,
        qemu=root / info["qemu_binary"],
        sysroot=root / info["sysroot"],
        site=root / info["site"],
        qemu_version=_qemu_version(str(info["qemu"])),
        qemu_build=str(info["qemu"]),
        python=str(info["python"]),
        runtimes=dict(info["runtimes"]),
        default_cpu=str(info.get("qemu_cpu", DEFAULT_CPU)),
    )
    for what, path in (("qemu", env.qemu), ("python", env.python_exe), ("site", env.site)):
        if not path.exists():
            raise _unavailable(f"{root} is incomplete: {what} missing at {path}")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise _unavailable(
            f"the environment runs on x86-64 hosts; this one is {platform.machine()}"
        )
    return env


def _qemu_version(line: str) -> str:
    """ "qemu-aarch64 version 10.0.2 (Debian 1:10.0.2+ds-2...)" -> "10.0.2"."""
    words = line.split()
    return words[words.index("version") + 1] if "version" in words[:-1] else line.strip()


def emulated_host(env: EmulationEnv, cpu: str, header: Mapping[str, Any]) -> HostInfo:
    """What an emulated measurement was taken on: the emulated CPU, marked as emulated."""
    runtimes = {k: v for k, v in env.runtimes.items() if k in ("onnxruntime", "openvino", "tvm")}
    return HostInfo(
        arch=env.arch,
        cpu_model=f"{cpu} (emulated)",
        cpu_count=int(header.get("cpu_count", 1)),
        isa=list(header.get("cpu_features", [])),
        os=f"{platform.system()} {platform.release()} (x86_64 host), Debian arm64 sysroot",
        runtimes=runtimes,
        emulated=env.describe(cpu),
    )


@dataclass(frozen=True)
class ArtifactJob:
    """One artifact to run: where its files are and how its backend loads them."""

    id: str
    backend: str  # onnxruntime | openvino | tvm
    directory: Path
    runtime: RuntimeSettings
    outputs: list[str]  # contract output names, in order


@dataclass
class EmulatedResult:
    """Outputs of one artifact per feed (in feed order), or why there are none."""

    id: str
    backend: str
    outputs: list[dict[str, np.ndarray]] | None
    error: str = ""
    stage: str = ""  # load | run | worker | crash | timeout, when it failed
    runtime_version: str = ""  # of the aarch64 build that ran it
    details: dict[str, Any] = field(default_factory=dict)
    host: HostInfo | None = None

    @property
    def ok(self) -> bool:
        return self.outputs is not None


def _tail(text: str, lines: int = 6) -> str:
    kept = [ln for ln in text.strip().splitlines() if "MIDR_EL1" not in ln]  # openvino noise
    return " | ".join(kept[-lines:])


def _exit_reason(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def run_emulated(
    env: EmulationEnv,
    jobs: Sequence[ArtifactJob],
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    cpu: str | None = None,
    threads: int = 0,
    timeout_s: float = 1800.0,
) -> list[EmulatedResult]:
    """Run every job on every feed in one emulated process; one result per job, in order.

    A worker that dies (a runtime crashing on a corrupt artifact) fails only the artifact it
    was running; the others run in a new worker. `threads` 0 keeps each artifact's setting.
    """
    cpu = cpu or env.default_cpu
    results: dict[int, EmulatedResult] = {}
    header: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="compile-pkg-emu-") as tmp:
        work = Path(tmp)
        write_feeds_npz(work / "feeds.npz", feeds)
        pending = list(range(len(jobs)))
        while pending:
            rc, stderr = _run_worker(env, jobs, pending, work, cpu, threads, timeout_s)
            header = header or _read_header(work)
            for rec in _read_results(work):
                i = int(rec["index"])
                if i in results:
                    continue
                results[i] = _result(jobs[i], rec, work)
            left = [i for i in pending if i not in results]
            if not left:
                break
            culprit = left[0]  # the worker runs in order: it died on the first unanswered job
            why = "timed out" if rc is None else f"{_exit_reason(rc)}"
            results[culprit] = EmulatedResult(
                id=jobs[culprit].id,
                backend=jobs[culprit].backend,
                outputs=None,
                stage="timeout" if rc is None else "crash",
                error=f"the emulated {env.arch} worker {why} while running this artifact"
                + (f": {_tail(stderr)}" if _tail(stderr) else ""),
            )
            pending = left[1:]
    host = emulated_host(env, cpu, header)
    for r in results.values():
        r.host = host
    return [results[i] for i in range(len(jobs))]


def _run_worker(
    env: EmulationEnv,
    jobs: Sequence[ArtifactJob],
    indices: list[int],
    work: Path,
    cpu: str,
    threads: int,
    timeout_s: float,
) -> tuple[int | None, str]:
    job = {
        "protocol": PROTOCOL,
        "feeds": str(work / "feeds.npz"),
        "threads": threads,
        "out_dir": str(work),
        "artifacts": [
            {
                "index": i,
                "id": jobs[i].id,
                "backend": jobs[i].backend,
                "dir": str(jobs[i].directory.resolve()),
                "runtime": settings_to_json(jobs[i].runtime),
                "outputs": jobs[i].outputs,
            }
            for i in indices
        ],
    }
    job_path = work / f"job-{indices[0]}.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    try:
        proc = subprocess.run(
            env.command(WORKER, str(job_path)),
            env=env.environ(cpu),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            cwd=work,
            preexec_fn=_no_core_dumps,  # a crashing runtime must not write a multi-GB qemu core
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        return None, err
    except OSError as exc:
        raise _unavailable(f"cannot start {env.qemu}: {exc}") from exc
    if proc.returncode != 0 and not (work / "header.json").is_file():
        # died before its first line of work: the environment, not an artifact, is broken
        raise _unavailable(
            f"the emulated Python in {env.root} does not start ({_exit_reason(proc.returncode)}): "
            f"{_tail(proc.stderr)}; rebuild it with scripts/setup_emulation.sh --force"
        )
    return proc.returncode, proc.stderr


def _no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _read_header(work: Path) -> dict[str, Any]:
    path = work / "header.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _read_results(work: Path) -> list[dict[str, Any]]:
    path = work / "results.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(ln) for ln in lines if ln.strip().endswith("}")]


def _result(job: ArtifactJob, rec: dict[str, Any], work: Path) -> EmulatedResult:
    outputs = read_feeds_npz(work / rec["outputs"]) if rec.get("ok") else None
    return EmulatedResult(
        id=job.id,
        backend=job.backend,
        outputs=outputs,
        error="" if rec.get("ok") else str(rec.get("error", "unknown error")),
        stage="" if rec.get("ok") else str(rec.get("stage", "")),
        runtime_version=str(rec.get("runtime_version", "")),
        details=dict(rec.get("details", {})),
    )
