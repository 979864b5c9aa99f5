"""Verify arm (aarch64) artifacts on an x86-64 host by running the aarch64 builds of their
runtimes under qemu user-mode emulation.

`scripts/setup_emulation.sh` builds the environment once (qemu-aarch64, an arm64 sysroot
with Python 3.11, aarch64 wheels). This module finds it, runs every artifact of a package
in one emulated Python (`compiler/_emulated_worker.py`: importing a runtime costs seconds
under emulation), and turns the outputs into parity records marked `mode: emulated` that
name the emulated CPU, the qemu version and the aarch64 runtime versions. Nothing is timed:
latency under emulation says nothing about an arm CPU.
"""

from __future__ import annotations

import functools
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

from compiler.core.errors import BackendUnavailable, IntegrityError, PackageError
from compiler.core.feeds import read_feeds_npz
from compiler.core.host import HostInfo
from compiler.core.parity import compare_outputs
from compiler.core.records import EmulationInfo, MeasuredOn, ParityRecord
from compiler.core.settings import settings_to_json
from compiler.measure.verify import now_utc

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
    "verify_emulated",
]

EMU_DIR_ENV = "COMPILE_PKG_EMU_DIR"
LAYOUT = 1  # must match LAYOUT in scripts/setup_emulation.sh
DEFAULT_CPU = "neoverse-n1"  # qemu's default `max` enables SVE/SME: slow and unrepresentative
SETUP_HINT = "set up with scripts/setup_emulation.sh"
SUPPORTED_ARCHS = ("aarch64",)
WORKER = Path(__file__).with_name("_emulated_worker.py")
_PROTOCOL = 1  # of the job file; must match _emulated_worker.PROTOCOL


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
        """A clean environment: nothing of the host's Python setup leaks into the emulated one."""
        return {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": os.environ.get("HOME", "/tmp"),
            "QEMU_CPU": cpu,
            "PYTHONPATH": str(self.site),
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
    runtime: dict[str, Any]
    inputs: list[str]  # contract input names, in order
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


def _pack(feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, Any]:
    return {f"{i:05d}.{k}": np.asarray(v) for i, f in enumerate(feeds) for k, v in f.items()}


def _unpack(path: Path) -> list[dict[str, np.ndarray]]:
    out: dict[int, dict[str, np.ndarray]] = {}
    with np.load(path) as arrays:
        for key in arrays.files:
            idx, _, name = key.partition(".")
            out.setdefault(int(idx), {})[name] = arrays[key]
    return [out[i] for i in sorted(out)]


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
        np.savez(work / "feeds.npz", **_pack(feeds))
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
        "protocol": _PROTOCOL,
        "feeds": str(work / "feeds.npz"),
        "threads": threads,
        "out_dir": str(work),
        "artifacts": [
            {
                "index": i,
                "id": jobs[i].id,
                "backend": jobs[i].backend,
                "dir": str(jobs[i].directory.resolve()),
                "runtime": jobs[i].runtime,
                "inputs": jobs[i].inputs,
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
    outputs = _unpack(work / rec["outputs"]) if rec.get("ok") else None
    return EmulatedResult(
        id=job.id,
        backend=job.backend,
        outputs=outputs,
        error="" if rec.get("ok") else str(rec.get("error", "unknown error")),
        stage="" if rec.get("ok") else str(rec.get("stage", "")),
        runtime_version=str(rec.get("runtime_version", "")),
        details=dict(rec.get("details", {})),
    )


# --- package level: what `compile-pkg verify --emulate aarch64` calls ----------------------


def verify_emulated(
    package: Path,
    arch: str = "aarch64",
    *,
    cpu: str | None = None,
    threads: int = 0,
    env: EmulationEnv | None = None,
    write: bool = False,
) -> list[EmulatedRow]:
    """Parity of every built `arch` artifact of `package`, run under emulation.

    Returns one row per artifact; each record has mode "emulated" and names the emulated CPU,
    qemu and the aarch64 runtime version. With `write`, the records are appended to the
    manifest's measurements, like `compile-pkg verify` does.
    """
    from compiler.packaging.package import rewrite_manifest
    from compiler.serving.loader import check_files
    from compiler.serving.manifest import read_manifest

    m = read_manifest(package)
    chosen = [
        a
        for a in m.artifacts
        if a.status == "built" and a.requirements is not None and a.requirements.arch == arch
    ]
    if not chosen:
        have = sorted(a.id for a in m.artifacts)
        raise PackageError(f"{package}: no built {arch} artifact to verify (artifacts: {have})")
    env = env or locate_environment(arch)
    cpu = cpu or env.default_cpu
    inputs = read_feeds_npz(package / "reference" / "inputs.npz")
    refs = read_feeds_npz(package / "reference" / "outputs.npz")
    rows: list[EmulatedRow] = []
    runnable = []
    for a in chosen:
        try:
            check_files(package, a)
        except IntegrityError as exc:
            record = ParityRecord(
                status="error", reason=str(exc), mode="emulated", precision=a.precision
            )
            rows.append(EmulatedRow(a.id, record))
            continue
        runnable.append(a)
    jobs = [
        ArtifactJob(
            id=a.id,
            backend=a.backend,
            directory=package / a.directory,
            runtime=settings_to_json(a.runtime),  # type: ignore[arg-type]
            inputs=[t.name for t in m.contract.inputs],
            outputs=[t.name for t in m.contract.outputs],
        )
        for a in runnable
    ]
    results = run_emulated(env, jobs, inputs, cpu=cpu, threads=threads) if jobs else []
    for a, res in zip(runnable, results, strict=True):
        rows.append(
            EmulatedRow(a.id, _emulated_record(a.precision, a.backend, res, refs, m, env, cpu))
        )
    if write:
        for row in rows:
            m.measured(row.id).parity.append(row.parity)
        rewrite_manifest(package, m)
    order = {a.id: i for i, a in enumerate(chosen)}
    return sorted(rows, key=lambda r: order[r.id])


@dataclass(frozen=True)
class EmulatedRow:
    id: str
    parity: ParityRecord


def _emulated_record(
    precision: str,
    backend: str,
    res: EmulatedResult,
    refs: list[dict[str, np.ndarray]],
    m: Any,
    env: EmulationEnv,
    cpu: str,
) -> ParityRecord:
    assert res.host is not None
    on = MeasuredOn(**res.host.model_dump(exclude={"hostname"}), measured_at=now_utc())
    version = res.runtime_version or env.runtimes.get(backend, "?")
    runtime = f"the {env.arch} build of {backend} {version}"
    note = (
        f"ran {runtime} under {env.describe(cpu)} user-mode emulation on an x86_64 host; "
        "parity only: nothing is timed under emulation"
    )
    emulation = EmulationInfo(
        qemu=env.qemu_build,
        cpu=cpu,
        runtime=f"{backend} {res.runtime_version}".strip(),
        python=env.python,
    )
    if not res.ok:
        return ParityRecord(
            status="error",
            reason=f"could not run under emulation ({res.stage}): {res.error}",
            precision=precision,
            host=on,
            mode="emulated",
            note=note,
            emulation=emulation,
        )
    assert res.outputs is not None
    ok, per_output = compare_outputs(
        res.outputs, refs, functools.partial(m.policy.parity.tolerance, precision)
    )
    return ParityRecord(
        status="passed" if ok else "failed",
        precision=precision,
        samples=len(res.outputs),
        mode="emulated",
        note=note,
        reference=m.reference.description,
        host=on,
        outputs=per_output,
        runtime_details=res.details,
        emulation=emulation,
    )
