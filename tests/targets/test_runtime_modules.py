"""The run side of the backends: each runtime module is bare (imports without pydantic or onnx),
a serving process loads no build code, the runtime index matches the registry, and the
contract-checking runner every caller uses (on ONNX Runtime artifacts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compiler.core.errors import BackendUnavailable, CompilePkgError, ContractError, PackageError
from compiler.core.settings import OnnxRuntimeSettings, OpenVinoSettings
from targets.onnxruntime.backend import OnnxRuntimeBackend, OnnxRuntimeOptions
from targets.registry import BACKENDS
from targets.runner import open_runner, reference_runner
from targets.runtime_index import RUNTIMES, load_runtime
from tests.models import tiny_mlp
from tests.targets.builders import reference, request, save

REPO = Path(__file__).resolve().parents[2]
# what a runtime module may import of the project: the bare vocabulary only (TensorRT's device
# buffers are Polygraphy's TrtRunner's, imported with the runtime library)
BARE = {
    "compiler.core.errors",
    "compiler.core.settings",
    "compiler.core.runtime",
    "compiler.core.telemetry",
}
# bare helpers of one backend's own (standard library and numpy only)
OWN_HELPERS: dict[str, set[str]] = {
    "tensorrt": {"targets.tensorrt.dtypes", "targets.tensorrt.install"}
}


def _python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.parametrize("backend", sorted(RUNTIMES))
def test_runtime_module_imports_without_pydantic_or_onnx(backend: str) -> None:
    code = (
        "import sys\n"
        "for m in ('pydantic', 'onnx', 'yaml', 'passes'):\n"
        "    sys.modules[m] = None\n"
        f"import {RUNTIMES[backend]}\n"
        "print(' '.join(sorted(m for m in sys.modules if sys.modules[m] is not None)))\n"
    )
    modules = set(_python(code).split())
    loaded = {m for m in modules if m.split(".")[0] in ("compiler", "targets")}
    packages = {"compiler", "compiler.core", "targets", f"targets.{backend}"}
    allowed = packages | BARE | {RUNTIMES[backend]} | OWN_HELPERS.get(backend, set())
    assert loaded <= allowed, sorted(loaded - allowed)
    assert backend not in modules  # the runtime library loads with the first artifact


def test_serving_loads_no_pass_and_no_build_code() -> None:
    code = "import sys\nimport compiler.serving.loader\nprint(' '.join(sorted(sys.modules)))\n"
    modules = _python(code).split()
    build_side = [
        m
        for m in modules
        if m.split(".")[0] == "passes"
        or m in ("targets.registry", "targets.base", "targets.tensorrt.engine")
        or (m.startswith("targets.") and m.endswith((".backend", "._worker")))
    ]
    assert build_side == []
    assert "targets.runner" in modules and "onnx" not in modules


def test_runtime_index_matches_the_registry() -> None:
    assert set(RUNTIMES) == set(BACKENDS)
    for backend in RUNTIMES:
        assert callable(load_runtime(backend).load)
    with pytest.raises(BackendUnavailable, match=r"no runtime for it; known: \['onnxruntime'"):
        load_runtime("coreml")


# ---------------------------------------------------------------- the runner


@pytest.fixture
def ort_artifact(tmp_path: Path) -> tuple[Path, OnnxRuntimeSettings, Path]:
    src = save(tiny_mlp(), tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    req, _ = request(src, OnnxRuntimeOptions(intra_op_num_threads=1), tmp_path)
    result = OnnxRuntimeBackend().build(src, req, out)
    assert isinstance(result.runtime, OnnxRuntimeSettings)
    return out, result.runtime, src


def test_runner_checks_feeds_and_returns_contract_outputs(
    ort_artifact: tuple[Path, OnnxRuntimeSettings, Path],
) -> None:
    out, settings, src = ort_artifact
    _, contract = request(src, OnnxRuntimeOptions(), out)
    x = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    with open_runner("onnxruntime", out, settings, contract) as runner:
        got = runner.run({"x": x})
        assert list(got) == ["y"] and got["y"].dtype == np.float32
        np.testing.assert_array_equal(got["y"], reference(src, [{"x": x}])[0]["y"])
        with pytest.raises(ContractError, match="missing \\['x'\\]"):
            runner.run({"z": x})
        with pytest.raises(ContractError, match="dtype float64"):
            runner.run({"x": x.astype(np.float64)})
        info = runner.describe()
        assert str(info["runtime"]).startswith("onnxruntime ") and info["threads"] == 1
    with pytest.raises(CompilePkgError, match="this runner was closed"):
        runner.run({"x": x})
    fresh = open_runner("onnxruntime", out, settings, contract, threads=2)
    with pytest.raises(CompilePkgError, match=r"is not loaded \(call load\(\) first\)"):
        fresh.run({"x": x})
    fresh.load()
    assert fresh.describe()["threads"] == 2  # the caller's thread count wins
    fresh.close()


def test_open_runner_refuses_settings_of_another_backend(
    ort_artifact: tuple[Path, OnnxRuntimeSettings, Path],
) -> None:
    out, _, src = ort_artifact
    _, contract = request(src, OnnxRuntimeOptions(), out)
    ov = OpenVinoSettings(xml="model.xml", inference_precision="f32")
    with pytest.raises(PackageError, match="runtime settings are for openvino"):
        open_runner("onnxruntime", out, ov, contract)


def test_reference_runner_is_onnxruntime_on_the_fp32_model(
    ort_artifact: tuple[Path, OnnxRuntimeSettings, Path],
) -> None:
    _, _, src = ort_artifact
    _, contract = request(src, OnnxRuntimeOptions(), src.parent)
    x = np.ones((2, 8), np.float32)
    with reference_runner(src, contract, threads=1) as ref:
        np.testing.assert_array_equal(ref.run({"x": x})["y"], reference(src, [{"x": x}])[0]["y"])
        assert ref.describe()["graph_optimization_level"] == "all"
