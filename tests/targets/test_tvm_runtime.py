"""TVM artifacts run: parity with ONNX Runtime through the runner, the runtime module on a
runtime-only TVM without pydantic or onnx, and scripts/gpu_verify.py with the runtime-only
TVM copy where only numpy and the project source are importable."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from compiler.core.errors import ContractError
from compiler.core.feeds import write_feeds_npz
from compiler.core.latency import pairs_needed
from compiler.core.settings import settings_to_json
from compiler.core.tolerance import ParityPolicy, TaskSpec, Tolerance
from targets.runner import open_runner
from targets.tvm.runtime_pack import assemble_runtime
from tests.targets.builders import Feeds, reference
from tests.targets.conftest import Built

REPO = Path(__file__).resolve().parents[2]


def _feeds(batch: int, seed: int = 0) -> Feeds:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(0, 1, (batch, 3, 16, 16)).astype(np.float32)}


@pytest.mark.parametrize("batch", [1, 3])
def test_cpu_parity_dynamic_batch(tvm_cpu_fp32: Built, batch: int) -> None:
    out, result, contract, model = tvm_cpu_fp32
    feeds = _feeds(batch, seed=batch)
    with open_runner("tvm", out, result.runtime, contract, threads=1) as runner:
        got = runner.run(feeds)["y"]
        info = runner.describe()
    ref = reference(model, [feeds])[0]["y"]
    assert got.shape == ref.shape == (batch, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert info["device"] == "cpu" and info["threads"] == 1 and info["shapes"] == "dynamic"


def test_runner_checks_feeds_against_contract(tvm_cpu_fp32: Built) -> None:
    out, result, contract, _ = tvm_cpu_fp32
    with open_runner("tvm", out, result.runtime, contract) as runner:
        with pytest.raises(ContractError, match="dtype float64"):
            runner.run({"x": np.zeros((1, 3, 16, 16))})


def test_runtime_module_on_runtime_only_tvm_without_pydantic(
    tvm_cpu_fp32: Built, tmp_path: Path
) -> None:
    out, result, _, model = tvm_cpu_fp32
    feeds = _feeds(2, seed=7)
    np.save(tmp_path / "x.npy", feeds["x"])
    (tmp_path / "runtime.json").write_text(json.dumps(settings_to_json(result.runtime)))
    code = f"""
import json, sys
sys.modules["pydantic"] = None
sys.modules["onnx"] = None
from pathlib import Path
import numpy as np
from compiler.core.settings import settings_from_json
from targets.runtime_index import load_runtime
settings = settings_from_json(json.loads(Path({str(tmp_path / "runtime.json")!r}).read_text()))
loaded = load_runtime("tvm").load(Path({str(out)!r}), settings, ["y"], threads=1)
y = loaded.run({{"x": np.load({str(tmp_path / "x.npy")!r})}})["y"]
info = loaded.describe()
loaded.close()
import tvm
assert info["runtime_only"] and "tvm_compiler" not in tvm.base._LOADED_LIBS, tvm.base._LOADED_LIBS
assert "tvm.relax" not in sys.modules
np.save({str(tmp_path / "y.npy")!r}, y)
"""
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(
        np.load(tmp_path / "y.npy"), reference(model, [feeds])[0]["y"], rtol=1e-4, atol=1e-5
    )


# ---------------------------------------------------------------- runtime-only copy, gpu_verify


# a task metric for the mini package: the share of samples whose argmax is the label
_ACCURACY = """
import numpy as np

def accuracy(outputs, labels):
    return float(np.mean([int(np.argmax(o["y"])) == label for o, label in zip(outputs, labels)]))
"""


def _mini_package(
    root: Path, built: Built, name: str, refs_scale: float = 1.0, task: bool = False
) -> Path:
    """A package folder with what scripts/gpu_verify.py reads: a schema-2 manifest (artifact
    entry, recorded parity policy), the artifact, the reference model, inputs and outputs;
    with `task`, labels (the reference's argmax) and a task metric in the policy."""
    out, result, _, model = built
    pkg = root / name
    art = pkg / "artifacts" / "cpu.tvm-fp32"
    art.mkdir(parents=True)
    shutil.copyfile(out / "model.so", art / "model.so")
    (pkg / "reference").mkdir()
    shutil.copyfile(model, pkg / "reference" / "model.onnx")
    feeds = [_feeds(1, seed=s) for s in range(1, 9 if task else 3)]
    outs = [{"y": r["y"] * refs_scale} for r in reference(model, feeds)]
    write_feeds_npz(pkg / "reference" / "inputs.npz", feeds)
    write_feeds_npz(pkg / "reference" / "outputs.npz", outs)
    metric = None
    if task:
        (root / "metric.py").write_text(_ACCURACY)
        labels = [int(np.argmax(o["y"])) for o in outs]
        (pkg / "reference" / "labels.json").write_text(json.dumps(labels))
        metric = TaskSpec(metric=f"{root / 'metric.py'}:accuracy", max_drop=0.0)
    lib = art / "model.so"
    entry = {
        "id": "cpu/tvm-fp32",
        "target": "cpu",
        "backend": "tvm",
        "status": "built",
        "precision": "fp32",
        "directory": "artifacts/cpu.tvm-fp32",
        "files": [
            {
                "path": "artifacts/cpu.tvm-fp32/model.so",
                "sha256": hashlib.sha256(lib.read_bytes()).hexdigest(),
                "size": lib.stat().st_size,
            }
        ],
        "runtime": settings_to_json(result.runtime),
    }
    # a tighter fp32 bound than the default, to see that the recorded policy is what judges
    policy = ParityPolicy(
        tolerances={"fp32": Tolerance(atol=1e-5, min_cosine=0.9999, min_top1=1)}, task=metric
    )
    manifest = {
        "schema_version": 2,
        "contract": {"outputs": [{"name": "y", "kind": "class_scores"}]},
        "policy": {"parity": dataclasses.asdict(policy)},
        "artifacts": [entry],
        "core_sha256": "x",
    }
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    return pkg


def _gpu_verify(
    pkg: Path, runtime: Path, env: dict[str, str], site: bool = False
) -> tuple[int, dict[str, Any]]:
    """Run the script; without `site` the interpreter sees no installed packages (-S)."""
    out = pkg / "gpu_verification.json"
    python = [sys.executable] if site else [sys.executable, "-S"]
    cmd = [*python, str(REPO / "scripts" / "gpu_verify.py"), "verify", str(pkg),
           "--tvm-runtime", str(runtime), "--out", str(out), "--target", "cpu",
           "--runs", "3", "--warmup", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=pkg.parent, env=env, capture_output=True, text=True)
    assert out.is_file(), proc.stderr[-2000:]
    return proc.returncode, json.loads(out.read_text())


def test_runtime_copy_runs_gpu_verify_without_installed_tvm(
    tvm_cpu_fp32: Built, tmp_path: Path
) -> None:
    runtime = assemble_runtime(tmp_path / "tvm_runtime")
    assert not (runtime / "tvm" / "lib" / "libtvm_compiler.so").exists()
    size = sum(f.stat().st_size for f in runtime.rglob("*") if f.is_file())
    assert size < 40 * 2**20, f"runtime copy is {size / 2**20:.1f} MiB"
    numpy_only = tmp_path / "numpy_only"  # the interpreter sees the copy and numpy, nothing else
    numpy_only.mkdir()
    (numpy_only / "numpy").symlink_to(Path(np.__file__).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TVM_LIBRARY_PATH")} | {
        "PYTHONPATH": str(numpy_only)
    }

    rc, record = _gpu_verify(_mini_package(tmp_path, tvm_cpu_fp32, "good"), runtime, env)
    tvm_version = importlib.metadata.version("apache-tvm")
    assert rc == 0 and record["runtime"] == {"runtime_only": True, "tvm": tvm_version}
    art = record["artifacts"][0]
    assert art["status"] == "passed", art
    y = art["parity"]["y"]
    assert y["passed"] and y["max_abs_err"] < 1e-5 and y["kind"] == "class_scores"
    assert y["top1_decided"] == 1.0  # the manifest's contract says what y means
    assert y["tolerance"]["atol"] == 1e-5  # the package's recorded policy judged it
    assert art["latency"]["device_resident"]["p50_ms"] > 0
    assert art["latency"]["device_resident"]["runs"] == 3 and art["latency"]["batch"] == 1
    assert art["task"] is None and art["basis"] == ""
    # no onnxruntime to time the reference with: said, not guessed
    assert record["reference"]["status"] == "skipped"
    assert "onnxruntime does not import" in record["reference"]["reason"]
    assert art["against_reference"] == record["reference"]

    bad = _mini_package(tmp_path, tvm_cpu_fp32, "wrong-refs", refs_scale=1.5)
    rc, record = _gpu_verify(bad, runtime, env)
    art = record["artifacts"][0]
    assert rc == 1 and art["status"] == "failed"
    assert any("max abs err" in f for f in art["parity"]["y"]["failures"])


def test_gpu_verify_scores_the_task_and_times_the_reference_beside_the_artifact(
    tvm_cpu_fp32: Built, tmp_path: Path
) -> None:
    """Where onnxruntime imports, the record holds the reference timed on the same host in
    paired blocks (a speedup with its interval), and the package's task metric scores the
    artifact on the labelled samples as the build's verdict does."""
    runtime = assemble_runtime(tmp_path / "tvm_runtime")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TVM_LIBRARY_PATH")}
    env["PYTHONPATH"] = str(REPO)  # the metric file imports numpy only; REPO for nothing else

    rc, record = _gpu_verify(_mini_package(tmp_path, tvm_cpu_fp32, "task", task=True), runtime,
                             env, site=True)  # fmt: skip
    art = record["artifacts"][0]
    assert rc == 0 and art["status"] == "passed", art
    task = art["task"]
    assert task["status"] == "passed" and task["samples"] == 8
    assert task["reference"] == task["artifact"] == 1.0 and task["worse"] == []
    against = art["against_reference"]
    assert against["status"] == "timed" and against["runtime"].startswith("onnxruntime ")
    speedup = against["speedup"]
    assert speedup["pairs"] >= pairs_needed(0.95) and len(speedup["ratios"]) == speedup["pairs"]
    assert 0 < speedup["low"] <= speedup["estimate"] <= speedup["high"]
    assert against["runs_per_block"]["artifact"] >= 3 and against["reference"]["p50_ms"] > 0
    assert record["host"]["cpu"]["cores"] >= 1


def test_gpu_verify_says_when_a_static_library_fits_none_of_the_samples(
    tvm_cpu_fp32: Built, tmp_path: Path
) -> None:
    """A library built static at a shape none of the package's samples has (ppocr_rec's gpu
    artifacts at the probed x[1, 3, 64, 224] beside 48-pixel text lines) fails with the shapes
    on both sides and the fix, before anything is loaded."""
    pkg = _mini_package(tmp_path, tvm_cpu_fp32, "static")
    manifest = json.loads((pkg / "manifest.json").read_text())
    runtime = manifest["artifacts"][0]["runtime"]
    runtime["shapes"] = "static"
    runtime["inputs"][0]["shape"] = [1, 3, 32, 32]  # the samples are [1, 3, 16, 16]
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TVM_LIBRARY_PATH")}
    rc, record = _gpu_verify(pkg, assemble_runtime(tmp_path / "tvm_runtime"), env, site=True)
    art = record["artifacts"][0]
    assert rc == 1 and art["status"] == "failed" and "latency" not in art
    assert art["reason"].startswith("built static for x[1, 3, 32, 32]; none of the package's 2")
    assert "(x[1, 3, 16, 16] x2)" in art["reason"] and "--set dims.NAME.opt=SIZE" in art["reason"]
