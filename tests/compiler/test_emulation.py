"""Arm artifacts run for real: aarch64 builds of ONNX Runtime, OpenVINO and runtime-only TVM
under qemu-aarch64 user-mode emulation, loaded by the same runtime modules the serving runner
uses, compared with the x86-64 ONNX Runtime reference.

Needs the environment from scripts/setup_emulation.sh (skips with that reason otherwise).
All artifacts run in ONE emulated process (a module fixture): importing a runtime costs
seconds under emulation. Package-level checks: test_emulation_package.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.core.errors import BackendUnavailable
from compiler.core.settings import TvmSettings
from compiler.measure.emulation import (
    EMU_DIR_ENV,
    PROJECT_ROOT,
    ArtifactJob,
    EmulatedResult,
    EmulationEnv,
    locate_environment,
    run_emulated,
)
from targets.base import Backend, BackendOptions
from targets.onnxruntime.backend import OnnxRuntimeBackend, OnnxRuntimeOptions
from targets.openvino.backend import OpenVinoBackend, OpenVinoOptions
from targets.tvm.backend import TvmBackend, TvmOptions
from tests.targets.builders import Feeds, conv_net, reference, request

FP32_ATOL, FP32_RTOL = 1e-5, 1e-4  # aarch64 vs x86-64 kernels: summation order only


def tiny_model(seed: int = 0) -> onnx.ModelProto:
    """x[2,3,8,8] -> Conv, Relu, Conv, Relu, GAP, MatMul, Softmax -> y[2,5]."""
    model = conv_net(seed, classes=5, size=8, batch=2)
    onnx.checker.check_model(model, full_check=True)
    return model


def _feeds(count: int = 3) -> list[Feeds]:
    rng = np.random.default_rng(1)
    return [{"x": rng.normal(0, 1, (2, 3, 8, 8)).astype(np.float32)} for _ in range(count)]


def _artifact(
    backend: Backend, options: BackendOptions, model_path: Path, out: Path, job_id: str
) -> ArtifactJob:
    out.mkdir(parents=True)
    req, _ = request(model_path, options, out, target="arm")
    res = backend.build(model_path, req, out)
    assert res.requirements.arch == "aarch64"
    return ArtifactJob(job_id, options.backend, out, res.runtime, ["y"])


def _aborting_library(out: Path) -> ArtifactJob:
    """A real aarch64 shared library that aborts when loaded: the worker process dies."""
    out.mkdir(parents=True)
    src = out / "boom.c"
    src.write_text(
        "#include <stdlib.h>\n__attribute__((constructor)) static void boom(void) { abort(); }\n"
    )
    subprocess.run(
        ["aarch64-linux-gnu-gcc", "-shared", "-fPIC", "-o", str(out / "model.so"), str(src)],
        check=True,
    )
    settings = TvmSettings(library="model.so", device="cpu", inputs=(), outputs=())
    return ArtifactJob("arm/tvm-crash", "tvm", out, settings, ["y"])


def _assert_fp32_parity(result: EmulatedResult, refs: list[Feeds]) -> None:
    assert result.ok, f"{result.id}: {result.stage}: {result.error}"
    assert result.outputs is not None and len(result.outputs) == len(refs)
    for got, ref in zip(result.outputs, refs, strict=True):
        assert got["y"].shape == ref["y"].shape and got["y"].dtype == np.float32
        np.testing.assert_allclose(got["y"], ref["y"], atol=FP32_ATOL, rtol=FP32_RTOL)
        assert (got["y"].argmax(-1) == ref["y"].argmax(-1)).all()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def emu_env() -> EmulationEnv:
    try:
        return locate_environment("aarch64")
    except BackendUnavailable as exc:
        pytest.skip(f"aarch64 emulation not set up ({exc})")


def _jobs(tmp: Path, model_path: Path) -> list[ArtifactJob]:
    ort = _artifact(OnnxRuntimeBackend(), OnnxRuntimeOptions(), model_path, tmp / "ort", "arm/ort")
    corrupt_dir = tmp / "ort-corrupt"
    shutil.copytree(ort.directory, corrupt_dir)
    data = (corrupt_dir / "model.onnx").read_bytes()
    (corrupt_dir / "model.onnx").write_bytes(data[: len(data) // 2])  # truncated protobuf
    jobs = [ort, ArtifactJob("arm/ort-corrupt", "onnxruntime", corrupt_dir, ort.runtime, ["y"])]
    if OpenVinoBackend.availability("arm").ok:
        jobs.append(
            _artifact(OpenVinoBackend(), OpenVinoOptions(), model_path, tmp / "ov", "arm/ov")
        )
    if TvmBackend.availability("arm").ok:
        jobs.append(_artifact(TvmBackend(), TvmOptions(), model_path, tmp / "tvm", "arm/tvm"))
        jobs.append(_aborting_library(tmp / "tvm-crash"))
        # runs after the crash, in a second worker
        jobs.append(
            ArtifactJob("arm/ort-after-crash", "onnxruntime", ort.directory, ort.runtime, ["y"])
        )
    return jobs


@pytest.fixture(scope="module")
def emulated_run(emu_env: EmulationEnv, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every artifact in one emulated worker; the crashing one forces a restart."""
    tmp = tmp_path_factory.mktemp("emu")
    model = tiny_model()
    model_path = tmp / "model" / "model.onnx"
    model_path.parent.mkdir()
    onnx.save(model, model_path)
    jobs = _jobs(tmp, model_path)
    feeds = _feeds()
    results = run_emulated(emu_env, jobs, feeds)
    return {
        "by_id": {r.id: r for r in results},
        "refs": reference(model_path, feeds),
        "ids": [j.id for j in jobs],
        "env": emu_env,
    }


# ---------------------------------------------------------------- environment errors


def test_missing_environment_says_how_to_set_it_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-emu"
    empty.mkdir()
    monkeypatch.setenv(EMU_DIR_ENV, str(empty))
    with pytest.raises(BackendUnavailable) as info:
        locate_environment("aarch64")
    msg = str(info.value)
    assert "set up with scripts/setup_emulation.sh" in msg
    assert str(empty) in msg and EMU_DIR_ENV in msg


def test_incomplete_environment_names_the_missing_part(tmp_path: Path) -> None:
    info = {
        "layout": 1,
        "arch": "aarch64",
        "qemu": "qemu-aarch64 version 10.0.2",
        "qemu_binary": "bin/qemu-aarch64",
        "sysroot": "sysroot",
        "site": "site",
        "python": "3.11.2",
        "runtimes": {},
    }
    (tmp_path / "env.json").write_text(json.dumps(info))
    with pytest.raises(BackendUnavailable, match=r"incomplete: qemu missing.*setup_emulation"):
        locate_environment("aarch64", root=tmp_path)


def test_unsupported_arch_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match=r"no emulation for arch 'riscv64'"):
        locate_environment("riscv64", root=tmp_path)


def test_worker_imports_only_bare_modules() -> None:
    """What the emulated Python can import: numpy, the runtimes and the project's bare modules."""
    code = (
        "import sys\n"
        "for m in ('pydantic', 'onnx', 'yaml', 'onnxruntime', 'openvino', 'tvm'):\n"
        "    sys.modules[m] = None\n"
        "import compiler.measure._emulated_worker\n"
        "print(' '.join(sorted(m for m in sys.modules if sys.modules[m] is not None\n"
        "                      and m.split('.')[0] in ('compiler', 'targets'))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = set(proc.stdout.split())
    assert {"targets.runtime_index", "compiler.core.settings"} <= loaded
    bare = {"errors", "feeds", "runtime", "settings", "telemetry"}
    assert {m for m in loaded if m.startswith("compiler.core.")} <= {
        f"compiler.core.{b}" for b in bare
    }
    assert not any(m.startswith("targets.") and m != "targets.runtime_index" for m in loaded)


# ---------------------------------------------------------------- artifacts under emulation


def test_onnxruntime_arm_artifact_matches_x86_reference(emulated_run: dict) -> None:
    res = emulated_run["by_id"]["arm/ort"]
    _assert_fp32_parity(res, emulated_run["refs"])
    assert res.runtime_version == emulated_run["env"].runtimes["onnxruntime"]
    assert res.details["device"] == "cpu"  # the runtime module's own description


def test_results_are_marked_emulated_with_cpu_and_qemu(emulated_run: dict) -> None:
    host = emulated_run["by_id"]["arm/ort"].host
    assert host is not None
    assert host.arch == "aarch64"
    assert host.emulated.startswith("qemu-aarch64 10.") and "(cpu neoverse-n1)" in host.emulated
    assert host.cpu_model == "neoverse-n1 (emulated)"
    # the emulated CPU's features as the aarch64 process sees them: NEON, no SVE
    assert "asimd" in host.isa and "sve" not in host.isa
    assert "onnxruntime" in host.runtimes


def test_openvino_ir_under_emulation_runs_in_f32(emulated_run: dict) -> None:
    if "arm/ov" not in emulated_run["by_id"]:
        pytest.skip("openvino is not installed on this host")
    res = emulated_run["by_id"]["arm/ov"]
    _assert_fp32_parity(res, emulated_run["refs"])
    assert res.details["precision"] == "f32"  # not the ARM plugin's f16 default
    assert res.runtime_version == emulated_run["env"].runtimes["openvino"]


def test_tvm_aarch64_library_under_runtime_only_tvm(emulated_run: dict) -> None:
    if "arm/tvm" not in emulated_run["by_id"]:
        pytest.skip("needs apache-tvm and aarch64-linux-gnu-gcc (scripts/setup.sh)")
    res = emulated_run["by_id"]["arm/tvm"]
    _assert_fp32_parity(res, emulated_run["refs"])
    assert res.details["runtime_only"] is True


def test_corrupted_artifact_fails_with_the_runtime_error(emulated_run: dict) -> None:
    res = emulated_run["by_id"]["arm/ort-corrupt"]
    assert not res.ok and res.outputs is None
    assert res.stage == "load"
    assert "model.onnx" in res.error and "Protobuf parsing failed" in res.error


def test_crashing_artifact_fails_alone(emulated_run: dict) -> None:
    if "arm/tvm-crash" not in emulated_run["by_id"]:
        pytest.skip("needs apache-tvm and aarch64-linux-gnu-gcc (scripts/setup.sh)")
    crash = emulated_run["by_id"]["arm/tvm-crash"]
    assert not crash.ok and crash.stage == "crash"
    assert "worker killed by SIGABRT while running this artifact" in crash.error
    # the artifact after it still ran, in a fresh worker
    _assert_fp32_parity(emulated_run["by_id"]["arm/ort-after-crash"], emulated_run["refs"])
    assert list(emulated_run["by_id"]) == emulated_run["ids"]
