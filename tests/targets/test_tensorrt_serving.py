"""TensorRT on a serving host, without TensorRT here: the engine cache, compatibility of an
engine with a described host, the prebuilt / cached / build / fallback decision, profile
selection, the runtime module refusing with reasons, and serving a fallback while a deferred
engine build runs (and fails)."""

from __future__ import annotations

import functools
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from compiler.core.contract import DimRange
from compiler.core.errors import BackendUnavailable, ContractError
from compiler.core.host import HostInfo, probe_host
from compiler.core.settings import OnnxRuntimeSettings, settings_to_json
from targets.runner import Runner, SwitchingRunner, open_runner
from targets.tensorrt import runtime as trt_runtime
from targets.tensorrt.backend import TensorRTBackend
from targets.tensorrt.cache import EngineCache, engine_cache_key
from targets.tensorrt.compat import check_compatibility, decide_engine, tensorrt_flavour
from targets.tensorrt.engine import EngineBuildJob, GpuBusy, out_of_memory
from targets.tensorrt.options import derive_profiles
from targets.tensorrt.resolve import ResolvedEngine, host_code_allowed
from targets.tensorrt.spec import SPEC_FILE
from tests.targets.tensorrt_data import A10, H100, H200, T4, build, host, mlp_contract, record

needs_no_trt = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None and bool(probe_host().gpus),
    reason="this host can build engines, so build: auto makes a prebuilt engine here",
)


def test_engine_cache_key() -> None:
    key = engine_cache_key("a" * 64, H100, "10.16.1.11", "s1")
    assert key == engine_cache_key("a" * 64, H100, "10.16.1.11", "s1")
    assert key.startswith("sm90-trt1016111-")
    others = {
        engine_cache_key("b" * 64, H100, "10.16.1.11", "s1"),
        engine_cache_key("a" * 64, H200, "10.16.1.11", "s1"),
        engine_cache_key("a" * 64, A10, "10.16.1.11", "s1"),
        engine_cache_key("a" * 64, H100, "10.15.1.29", "s1"),
        engine_cache_key("a" * 64, H100, "10.16.1.11", "s2"),
    }
    assert key not in others and len(others) == 5


def test_engine_cache_store_lookup_and_timing_cache(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    assert cache.lookup("k") is None
    entry = cache.store("k", b"plan", {"tensorrt_version": "10.16"})
    assert entry.engine.read_bytes() == b"plan"
    assert cache.lookup("k").record == {"tensorrt_version": "10.16"}  # type: ignore[union-attr]
    timing = cache.timing_cache_path(H100, "10.16")  # Polygraphy reads and merges this file
    assert timing.parent == tmp_path / "tensorrt" / "timing"
    assert timing != cache.timing_cache_path(H200, "10.16")
    assert timing != cache.timing_cache_path(H100, "10.17")
    assert not list(tmp_path.rglob("*.tmp-*"))


@pytest.mark.parametrize(
    ("rec", "on", "reason"),
    [
        ({}, host(), None),
        ({}, host(trt="10.16.1"), None),
        ({}, host(trt="10.15.1.29"), "needs exactly that version; host has 10.15.1.29"),
        ({}, host(trt=None), "TensorRT is not importable"),
        ({}, host(gpu=None), "needs an NVIDIA GPU"),
        ({}, host(gpu=H200), "ties it to that GPU model"),
        ({}, host(gpu=A10), "built for compute capability 9.0"),
        ({"hardware_compatibility_level": "SAME_COMPUTE_CAPABILITY"}, host(gpu=H200), None),
        ({"hardware_compatibility_level": "SAME_COMPUTE_CAPABILITY"}, host(gpu=A10), "compute capability 9.0"),
        ({"hardware_compatibility_level": "AMPERE_PLUS"}, host(gpu=A10), None),
        ({"hardware_compatibility_level": "AMPERE_PLUS"}, host(gpu=T4), "AMPERE_PLUS"),
        ({"version_compatible": True}, host(trt="10.17.0.5"), None),
        ({"version_compatible": True}, host(trt="10.15.1.29"), "version-compatible from TensorRT 10.16.1.11"),
        ({"version_compatible": True}, host(trt="11.0.0.1"), "within major 10"),
        ({"version_compatible": True, "lean_runtime_excluded": True}, host(trt="10.17.0.5"), "lean runtime excluded"),
    ],
)  # fmt: skip
def test_check_compatibility(rec: dict[str, object], on: HostInfo, reason: str | None) -> None:
    why = check_compatibility(record(**rec).model_dump(), on)
    if reason is None:
        assert why == []
    else:
        assert len(why) == 1 and reason in why[0], why


def _prebuilt_runtime(spec: bool = True, **rec: object) -> dict[str, object]:
    rt: dict[str, object] = {"engine_mode": "prebuilt", "engine": "model.plan",
                             "compatibility": record(**rec).model_dump(mode="json")}  # fmt: skip
    if spec:
        rt.update(spec=SPEC_FILE, onnx_sha256="d" * 64, settings_digest="s")
    return rt


def test_decide_prebuilt_cached_build_or_fallback(tmp_path: Path) -> None:
    art, cache = tmp_path / "art", tmp_path / "cache"
    d = decide_engine(art, _prebuilt_runtime(), cache, host())
    assert d.action == "prebuilt" and d.engine == art / "model.plan"

    d = decide_engine(art, _prebuilt_runtime(), cache, host(gpu=A10))
    assert d.action == "build" and "prebuilt engine refused" in d.reasons[0]
    flavour = tensorrt_flavour()  # this host's TensorRT wheel ("" here, cu12/cu13 with one)
    assert d.cache_key == engine_cache_key("d" * 64, A10, "10.16.1.11", "s", flavour)

    d = decide_engine(art, _prebuilt_runtime(spec=False), cache, host(gpu=A10))
    assert d.action == "fallback" and "compute capability 9.0" in d.reasons[0]

    d = decide_engine(art, _prebuilt_runtime(), None, host(gpu=A10))
    assert d.action == "fallback" and "no engine cache directory" in d.reasons[-1]

    deferred = {"engine_mode": "deferred", "engine": None, "compatibility": None,
                "spec": SPEC_FILE, "onnx_sha256": "d" * 64, "settings_digest": "s"}  # fmt: skip
    d = decide_engine(art, deferred, cache, host(trt=None))
    assert d.action == "fallback"
    assert "cannot build here: TensorRT is not importable" in d.reasons[0]

    key = engine_cache_key("d" * 64, A10, "10.16.1.11", "s", flavour)
    a10 = record(gpu_name=A10.name, compute_capability="8.6")
    EngineCache(cache).store(key, b"plan", a10.model_dump())
    d = decide_engine(art, deferred, cache, host(gpu=A10))
    assert d.action == "cached" and d.engine == EngineCache(cache).entry(key) / "engine.plan"

    (EngineCache(cache).entry(key) / "engine.plan").write_bytes(b"plan, rewritten")
    d = decide_engine(art, deferred, cache, host(gpu=A10))  # bytes differ from their digest
    assert d.action == "build" and "differs from its recorded sha256; rebuilding" in d.reasons[0]

    old = record(gpu_name=A10.name, compute_capability="8.6", tensorrt_version="10.15.1.29")
    EngineCache(cache).store(key, b"plan", old.model_dump())
    d = decide_engine(art, deferred, cache, host(gpu=A10))
    assert d.action == "build" and "cached engine refused" in d.reasons[0]


def test_select_profile_on_recorded_profiles() -> None:
    overrides = [
        {"batch": DimRange(min=1, opt=1, max=1)},
        {"batch": DimRange(min=2, opt=8, max=16)},
    ]
    profiles = [p.model_dump(mode="json") for p in derive_profiles(mlp_contract(), overrides)]
    assert trt_runtime.select_profile(profiles, {"x": (1, 8)}) == 0
    assert trt_runtime.select_profile(profiles, {"x": (9, 8)}) == 1
    assert trt_runtime.select_profile([], {"x": (3, 8)}) == 0
    with pytest.raises(ContractError, match="fit none of the engine's optimization profiles"):
        trt_runtime.select_profile(profiles, {"x": (17, 8)})


@needs_no_trt
def test_runtime_refuses_with_reasons_on_a_host_without_tensorrt(tmp_path: Path) -> None:
    result, out = build(tmp_path)
    runner = open_runner("tensorrt", out, result.runtime, mlp_contract(), cache_dir=tmp_path / "c")
    with pytest.raises(BackendUnavailable, match="cannot build here"):
        runner.load()
    assert runner.build_job is None  # nothing builds: the loader just falls back
    avail = TensorRTBackend.runtime_availability()
    assert not avail.ok and "tensorrt" in avail.install
    assert TensorRTBackend.availability("gpu").ok and not TensorRTBackend.availability("cpu").ok


def test_failed_background_build_keeps_serving_the_fallback(tmp_path: Path) -> None:
    """A host that says it has TensorRT and a GPU, where the build then fails: the switching
    runner keeps serving the ONNX Runtime fallback and says why."""
    result, out = build(tmp_path, build="deferred")
    shutil.copytree(out, tmp_path / "ort")
    (out / "model.onnx").write_bytes(b"tampered")  # no longer the ONNX the spec names
    opener = functools.partial(
        trt_runtime.load, out, result.runtime, ["y"], cache_dir=tmp_path / "cache", host=host()
    )
    pending = Runner(mlp_contract(), opener, "tensorrt artifact out")
    with pytest.raises(BackendUnavailable, match="being built from the deferred spec"):
        pending.load()
    job = pending.build_job
    assert isinstance(job, EngineBuildJob)
    assert job.wait(timeout=60) is False and job.state == "failed"
    assert "sha256 differs from the build spec" in job.error
    ort = OnnxRuntimeSettings(model="model.onnx", intra_op_num_threads=1)
    fallback = open_runner("onnxruntime", tmp_path / "ort", ort, mlp_contract())
    with SwitchingRunner(fallback, pending) as r:
        y = r.run({"x": np.ones((2, 8), np.float32)})["y"]
        assert y.shape == (2, 4) and r.active is fallback
        assert "build failed" in str(r.describe()["switching"])


def test_engine_host_code_runs_only_for_the_packages_own_engine(tmp_path: Path) -> None:
    """Whoever can write the engine cache cannot turn host code on: only the package's own
    (manifest-checked) version-compatible engine gets it, whatever a cache record says."""
    portable = record(version_compatible=True).model_dump(mode="json")
    plain = record().model_dump(mode="json")
    engine = tmp_path / "engine.plan"
    assert host_code_allowed(ResolvedEngine(engine, portable, "prebuilt"))
    assert not host_code_allowed(ResolvedEngine(engine, plain, "prebuilt"))
    for source in ("cached", "built now"):
        assert not host_code_allowed(ResolvedEngine(engine, portable, source, "e" * 64))


def test_transient_build_failures_are_retried_with_back_off(tmp_path: Path) -> None:
    """An OSError (here: the cache directory is a file, so its build lock cannot be made) is
    retried `attempts` times; an integrity error is not retried at all."""
    result, out = build(tmp_path, build="deferred")
    runtime = settings_to_json(result.runtime)
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    job = EngineBuildJob(out, runtime, blocked, host(), attempts=3, backoff_s=0.01).start()
    assert job.wait(timeout=60) is False and job.state == "failed"
    assert job.tries == 3 and "(try 3/3)" in job.error
    (out / "model.onnx").write_bytes(b"tampered")
    once = EngineBuildJob(out, runtime, tmp_path / "cache", host(), attempts=3, backoff_s=0.01)
    assert once.start().wait(timeout=60) is False
    assert once.tries == 1 and "sha256 differs from the build spec" in once.error


def test_out_of_memory_while_building_is_worth_a_retry() -> None:
    """TensorRT's own wordings of a failed GPU allocation make a GpuBusy (retried); any
    other builder error stays a BuildError (not retried)."""
    assert issubclass(GpuBusy, RuntimeError)  # in EngineBuildJob's transient failures
    for line in (
        "ERROR: [defaultAllocator.cpp::allocate::20] Error Code 1: Cuda Runtime (out of memory)",
        "ERROR: Requested amount of memory (150994944 bytes) could not be allocated.",
        "INTERNAL_ERROR: tacticOptimizer.cpp (1715) - OutOfMemory Error in computeCosts: 0",
    ):
        assert out_of_memory(["WARNING: something else", line]), line
    assert not out_of_memory(["ERROR: Could not find any implementation for node conv0"])
    assert not out_of_memory([])
