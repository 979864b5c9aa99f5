"""The latency worker protocol on a real tiny package: blocks of timed runs, and every way a
worker can fail (cannot load, killed, silent) becomes a typed verdict with no process left
behind. Nothing here asserts how fast anything is."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from compiler.core.feeds import read_feeds_npz, write_feeds_npz
from compiler.core.host import probe_host
from compiler.core.policies import LatencyPolicy
from compiler.measure.latency_worker import STEADY_S
from compiler.measure.timing import block_runs, measure_latency
from compiler.measure.verify import measured_on
from compiler.measure.workers import Contender, WorkerFailed, WorkerProcess
from compiler.serving.manifest import Manifest, read_manifest
from tests.compiler.helpers import build
from tests.models import save, tiny_cnn

QUICK = LatencyPolicy(warmup=1, runs=4, max_seconds=5, block_ms=5, settle_ms=1)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("workers")
    model = save(tiny_cnn(), tmp / "cnn.onnx")
    return build(model, tmp / "pkg", None, targets=("cpu",)).package


def _children() -> list[int]:
    """Processes whose parent is this one (a zombie included, until reaped)."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            found.append(int(stat.parent.name))
    return found


def _artifact(package: Path) -> tuple[Manifest, Contender]:
    m = read_manifest(package)
    a = m.artifact("cpu/ort-fp32")
    assert a.runtime is not None
    return m, Contender(a.id, a.backend, package / a.directory, a.runtime)


def _feed(package: Path) -> dict[str, np.ndarray]:
    return read_feeds_npz(package / "reference" / "inputs.npz")[0]


def _start(package: Path, tmp_path: Path, contender: Contender | None = None) -> WorkerProcess:
    m, artifact = _artifact(package)
    feeds = tmp_path / "feed.npz"
    write_feeds_npz(feeds, [_feed(package)])
    return WorkerProcess.start(
        contender or artifact, m.contract, feeds, tmp_path, threads=0, warmup=2
    )


def test_worker_times_blocks_and_says_what_the_runtime_used(package: Path, tmp_path: Path) -> None:
    before = _children()
    with _start(package, tmp_path) as w:
        assert w.describe["runtime"].startswith("onnxruntime") and w.describe["threads"] >= 1
        assert len(w.ready["warmup_s"]) == 2 and w.run_s > 0
        # blocks are sized by runs after the warm-up (at least 3, STEADY_S in all), not by it
        steady = sorted(w.ready["steady_s"])
        assert len(steady) >= 3 and (sum(steady) >= STEADY_S or len(steady) == 1000)
        assert w.run_s == steady[len(steady) // 2]
        times = w.block(3, settle_s=0.0)
        assert len(times) == 3 and all(t > 0 for t in times)
    assert w.proc.returncode == 0 and _children() == before


def test_a_spawned_worker_loads_only_when_asked(package: Path, tmp_path: Path) -> None:
    """Spawned, a worker starts its interpreter and waits: nothing answers before `load`
    (the parent starts both contenders' workers at once and loads them one at a time); one
    closed unloaded exits cleanly, and one asked to load a broken artifact says so."""
    m, artifact = _artifact(package)
    feeds = tmp_path / "feed.npz"
    write_feeds_npz(feeds, [_feed(package)])
    before = _children()
    with WorkerProcess.spawn(artifact, m.contract, feeds, tmp_path, threads=0, warmup=1) as w:
        assert w.ready == {}
        with pytest.raises(WorkerFailed, match="no answer in"):
            w._readline("load", 3.0)  # started and waiting, not loading on its own
    assert _children() == before
    with WorkerProcess.spawn(artifact, m.contract, feeds, tmp_path, threads=0, warmup=1) as w:
        pass  # never loaded: asked to exit, it does
    assert w.proc.returncode == 0 and _children() == before
    broken = tmp_path / "broken"
    shutil.copytree(artifact.directory, broken)
    for f in broken.glob("*.onnx"):
        f.write_bytes(b"not an onnx model")
    bad = Contender(artifact.name, artifact.backend, broken, artifact.runtime)
    w = WorkerProcess.spawn(bad, m.contract, feeds, tmp_path, threads=0, warmup=1)
    with pytest.raises(WorkerFailed) as info:
        w.load()
    assert info.value.stage == "load" and w.proc.returncode is not None
    assert _children() == before
    with _start(package, tmp_path) as w:  # start: spawned and loaded
        assert w.run_s > 0 and len(w.ready["warmup_s"]) == 2


def test_a_worker_killed_mid_block_is_reported_and_reaped(package: Path, tmp_path: Path) -> None:
    before = _children()
    w = _start(package, tmp_path)
    killer = threading.Timer(0.3, os.kill, (w.proc.pid, signal.SIGKILL))
    killer.start()
    with pytest.raises(WorkerFailed, match="killed by SIGKILL") as info:
        w.block(10**7, settle_s=0.0)  # far longer than the timer
    killer.join()
    assert info.value.stage == "run" and info.value.contender.name == "cpu/ort-fp32"
    assert w.proc.returncode == -signal.SIGKILL and _children() == before


def test_a_worker_that_died_between_blocks_is_reported(package: Path, tmp_path: Path) -> None:
    w = _start(package, tmp_path)
    os.kill(w.proc.pid, signal.SIGKILL)
    w.proc.wait()
    with pytest.raises(WorkerFailed, match="killed by SIGKILL"):
        w.block(3, settle_s=0.0)


def test_a_silent_worker_is_killed_at_its_deadline(package: Path, tmp_path: Path) -> None:
    before = _children()
    w = _start(package, tmp_path)
    with pytest.raises(WorkerFailed, match="no answer in"):
        w.block(10**8, settle_s=0.0, timeout_s=0.5)
    assert w.proc.returncode is not None and _children() == before


def test_runs_per_block_follow_the_run_time() -> None:
    assert block_runs(1e-3, 50) == 50 and block_runs(2.0, 50) == 1 and block_runs(0, 50) == 10_000


def test_measured_record_holds_the_interval_and_both_runtimes(package: Path) -> None:
    m, artifact = _artifact(package)
    on = measured_on(probe_host())
    rec = measure_latency(
        artifact, _feed(package), m.contract, package / "reference/model.onnx", QUICK, on
    )
    assert rec.status == "measured" and rec.source == "build", rec.reason
    s = rec.speedup
    assert s is not None and 1 <= s.pairs <= QUICK.runs and len(s.ratios) == s.pairs
    assert s.low <= s.estimate <= s.high and rec.speedup_vs_reference == s.estimate
    assert rec.stopped in ("narrow", "slower", "budget", "max-pairs") and "ABBA" in rec.method
    assert rec.runner["runtime"] == rec.reference_runner["runtime"]
    assert rec.artifact is not None and rec.artifact.samples_ms == ()


def test_an_artifact_that_cannot_load_is_a_crashed_verdict(package: Path, tmp_path: Path) -> None:
    m, artifact = _artifact(package)
    broken = tmp_path / "broken"
    shutil.copytree(artifact.directory, broken)
    for f in broken.glob("*.onnx"):
        f.write_bytes(b"not an onnx model")
    before = _children()
    rec = measure_latency(
        Contender(artifact.name, artifact.backend, broken, artifact.runtime),
        _feed(package),
        m.contract,
        package / "reference/model.onnx",
        QUICK,
        measured_on(probe_host()),
    )
    assert rec.status == "crashed" and rec.reason.startswith("load: ")
    assert rec.speedup is None and not rec.measured and _children() == before


def test_a_reference_that_cannot_load_is_an_error_not_the_artifacts_fault(
    package: Path, tmp_path: Path
) -> None:
    m, artifact = _artifact(package)
    ref = tmp_path / "model.onnx"
    ref.write_bytes(b"garbage")
    rec = measure_latency(
        artifact, _feed(package), m.contract, ref, QUICK, measured_on(probe_host())
    )
    assert rec.status == "error" and rec.reason.startswith("the reference could not be timed")
    missing = measure_latency(
        artifact, _feed(package), m.contract, None, QUICK, measured_on(probe_host())
    )
    assert missing.status == "error" and "no reference model" in missing.reason
