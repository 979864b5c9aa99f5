"""Serving while a deferred engine builds (compiler/serving/deferred.py), without TensorRT: the
most promising deferred artifact starts first, the engine is used only once it passes parity
against the package's reference on this host, and the switch is safe under many threads.

TensorRT cannot run here, so the "engine" of these tests is a second real artifact (the
package's own ONNX Runtime one, or one of a different model) that appears when a background
thread finishes copying it into place: the switch logic sees the same states a TensorRT build
job goes through (building -> ready | failed)."""

from __future__ import annotations

import importlib.util
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from compiler.core.feeds import read_feeds_npz
from compiler.core.host import Requirements, probe_host
from compiler.core.runtime import LoadedArtifact
from compiler.core.settings import OnnxRuntimeSettings, TensorRTSettings
from compiler.serving.deferred import DeferredSwitch, ParityGate, order_deferred
from compiler.serving.loader import load
from compiler.serving.manifest import ArtifactEntry, FileEntry, Manifest
from compiler.serving.selection import Candidate
from targets.runner import Runner, open_runner
from targets.runtime_index import load_runtime
from targets.tensorrt.install import install_advice
from targets.tensorrt.runtime import EngineBuilding
from tests.compiler.helpers import build
from tests.models import save, tiny_mlp

ORT_ID = "cpu/ort-fp32"


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    tmp = tmp_path_factory.mktemp("pkg")
    model = save(tiny_mlp(), tmp / "mlp.onnx")
    outcome = build(model, tmp / "p", None, targets=("cpu",))
    return tmp / "p", outcome.manifest


def _deferred(precision: str) -> ArtifactEntry:
    d = f"artifacts/gpu.trt-{precision}"
    return ArtifactEntry(
        id=f"gpu/trt-{precision}", target="gpu", variant=f"trt-{precision}",
        backend="tensorrt", precision=precision, status="deferred", directory=d,
        files=[FileEntry(path=f"{d}/tensorrt_build.json", sha256="0" * 64, size=1)],
        runtime=TensorRTSettings(engine_mode="deferred", precision=precision,
                                 spec="tensorrt_build.json"),
        requirements=Requirements(arch="x86_64", gpu=True, runtime="tensorrt"),
    )  # fmt: skip


def test_most_promising_deferred_build_starts_first(package: tuple[Path, Manifest]) -> None:
    _, built = package
    m = built.model_copy(deep=True)
    m.artifacts += [_deferred(p) for p in ("fp32", "int8", "fp16")]
    ranked = [
        Candidate(i, True, "") for i in ("gpu/trt-fp32", "gpu/trt-int8", "gpu/trt-fp16", ORT_ID)
    ]
    got = [c.id for c in order_deferred(ranked, m)]
    assert got == ["gpu/trt-fp16", "gpu/trt-int8", "gpu/trt-fp32", ORT_ID]
    kept = [c.id for c in order_deferred(ranked, m, preferred=["gpu/trt-fp32"])]
    assert kept[0] == "gpu/trt-fp32" and kept[1:3] == ["gpu/trt-fp16", "gpu/trt-int8"]


class _CopyJob:
    """A background job that makes an artifact appear (what a build does), then says ready."""

    def __init__(self, src: Path, dst: Path, fail: str = "") -> None:
        self.state, self.error = "building", ""
        self._go = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(src, dst, fail), daemon=True)
        self._thread.start()

    def _run(self, src: Path, dst: Path, fail: str) -> None:
        self._go.wait(30)
        if fail:
            self.error, self.state = fail, "failed"
            return
        shutil.copytree(src, dst)
        self.state = "ready"

    def finish(self) -> None:
        self._go.set()
        self._thread.join(30)


def _ort(artifact_dir: Path, runner_contract: object) -> Runner:
    settings = OnnxRuntimeSettings(model="model.onnx", intra_op_num_threads=1)
    return open_runner("onnxruntime", artifact_dir, settings, runner_contract)  # type: ignore[arg-type]


def _switch(
    root: Path, m: Manifest, engine_src: Path, tmp: Path, fail: str = ""
) -> tuple[DeferredSwitch, _CopyJob, list[int]]:
    fallback = _ort(root / m.artifact(ORT_ID).directory, m.contract)
    fallback.load()
    job = _CopyJob(engine_src, tmp / "engine", fail)
    opened: list[int] = []
    settings = OnnxRuntimeSettings(model="model.onnx", intra_op_num_threads=1)
    outputs = [o.name for o in m.contract.outputs]

    def opener() -> LoadedArtifact:
        if job.state != "ready":
            raise EngineBuilding(job)
        opened.append(1)
        return load_runtime("onnxruntime").load(tmp / "engine", settings, outputs)  # type: ignore[no-any-return]

    pending = Runner(m.contract, opener, "tensorrt artifact gpu/trt-fp16")
    with pytest.raises(EngineBuilding):
        pending.load()
    gate = ParityGate(root, m, ORT_ID)  # the ORT artifact's precision and tolerances
    return DeferredSwitch(fallback, pending, gate), job, opened


def _hammer(switch: DeferredSwitch, feeds: list[dict[str, np.ndarray]]) -> Iterator[list[str]]:
    """8 threads running requests through `switch` until told to stop; yields their errors."""
    stop, errors = threading.Event(), list[str]()

    def worker() -> None:
        while not stop.is_set():
            for f in feeds:
                try:
                    switch.run(f)
                except Exception as exc:  # noqa: BLE001 - collected and asserted empty
                    errors.append(repr(exc))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        yield errors
    finally:
        stop.set()
        for t in threads:
            t.join(30)


def test_switch_happens_once_under_threads_after_parity(
    package: tuple[Path, Manifest], tmp_path: Path
) -> None:
    root, m = package
    switch, job, opened = _switch(root, m, root / m.artifact(ORT_ID).directory, tmp_path)
    feeds = read_feeds_npz(root / "reference" / "inputs.npz")
    ref = read_feeds_npz(root / "reference" / "outputs.npz")
    hammer = _hammer(switch, feeds)
    errors = next(hammer)
    assert switch.active is switch.fallback and "while the engine builds" in switch.note
    job.finish()
    assert switch.switched.wait(30), switch.note
    hammer.close()
    assert errors == []
    assert opened == [1]  # one thread loaded and checked the engine; the others kept serving
    assert switch.active is switch.pending and "passed parity here" in switch.note
    got = switch.run(feeds[0])
    np.testing.assert_allclose(got["y"], ref[0]["y"], rtol=1e-5, atol=1e-6)
    switch.close()


def test_engine_failing_parity_is_never_served(
    package: tuple[Path, Manifest], tmp_path: Path
) -> None:
    root, m = package
    other = tmp_path / "other"
    shutil.copytree(root / m.artifact(ORT_ID).directory, other)
    save(tiny_mlp(seed=7), other / "model.onnx")  # same contract, other weights: wrong answers
    switch, job, _ = _switch(root, m, other, tmp_path)
    job.finish()
    feeds = read_feeds_npz(root / "reference" / "inputs.npz")
    ref = read_feeds_npz(root / "reference" / "outputs.npz")
    got = switch.run(feeds[0])  # this request's thread runs the gate, then the fallback
    assert switch.active is switch.fallback and not switch.switched.is_set()
    assert "parity failed on this host" in switch.note and "output 'y'" in switch.note
    np.testing.assert_allclose(got["y"], ref[0]["y"], rtol=1e-5, atol=1e-6)
    switch.close()


def test_failed_build_keeps_the_fallback(package: tuple[Path, Manifest], tmp_path: Path) -> None:
    root, m = package
    switch, job, opened = _switch(root, m, root, tmp_path, fail="BuildError: parser said no")
    job.finish()
    feeds = read_feeds_npz(root / "reference" / "inputs.npz")
    switch.run(feeds[0])
    assert switch.active is switch.fallback and opened == []
    assert "engine build failed" in switch.note and "parser said no" in switch.note
    switch.close()


def _no_trt() -> str:
    if importlib.util.find_spec("tensorrt") is None:
        return f"TensorRT is not importable ({install_advice()})"
    return "" if probe_host().gpus else "no NVIDIA GPU (nvidia-smi finds none)"


@pytest.mark.tensorrt
@pytest.mark.skipif(bool(_no_trt()), reason=_no_trt() or "ok")
def test_loader_builds_one_engine_and_switches_after_parity(tmp_path: Path) -> None:
    """On a host with TensorRT and a GPU: a package with two deferred engines starts the fp16
    build only, serves ONNX Runtime meanwhile, and switches once the engine passes parity."""
    model = save(tiny_mlp(), tmp_path / "mlp.onnx")
    trt = {"backend": "tensorrt", "build": "deferred"}
    fp16 = {"compile": {**trt, "precision": "fp16"}}
    gpu = {"pipeline": "none", "variants": {"trt-fp32": {"compile": trt}, "trt-fp16": fp16}}
    build(model, tmp_path / "p", None, targets=("cpu", "gpu"), raw={"targets": {"gpu": gpu}})
    with load(tmp_path / "p", cache_dir=tmp_path / "cache") as s:
        decisions = {d.artifact: str(d) for d in s.decisions}
        assert s.artifact in (ORT_ID, "reference")  # whichever was measured faster
        assert "being built from the deferred spec" in decisions["gpu/trt-fp16"]
        assert "not started: gpu/trt-fp16's engine builds first" in decisions["gpu/trt-fp32"]
        switch = s.runner
        assert isinstance(switch, DeferredSwitch) and switch.gate is not None
        job = switch.build_job
        assert job is not None and job.wait(timeout=600), job.error  # type: ignore[attr-defined]
        feeds = read_feeds_npz(tmp_path / "p" / "reference" / "inputs.npz")
        s.run(feeds[0])
        assert switch.switched.is_set(), switch.note
        assert switch.active is switch.pending and "passed parity here" in switch.note
