"""ONNX Runtime's, OpenVINO's and NNCF's usage telemetry stays off in what compile-pkg runs
(compiler/core/telemetry.py): importing OpenVINO, converting a model and quantizing with NNCF
(which runs ONNX Runtime) write nothing under the user's home. Each runs in a child process with a home folder of its own and without
CI or NNCF_CI set (pytest's own process has NNCF's telemetry stubbed already)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openvino")

_REPO = Path(__file__).resolve().parents[2]

_BUILD_STEPS = """
import os, sys
import numpy as np, onnx
from onnx import TensorProto, helper, numpy_helper
from targets.openvino.backend import OpenVinoBackend, _convert
from passes.nncf import import_nncf

w = numpy_helper.from_array(np.ones((8, 8), np.float32), "w")
graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [w],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
path = sys.argv[1]
onnx.save(model, path)
assert OpenVinoBackend.runtime_availability().ok
_convert(path, model)
nncf = import_nncf()
feeds = [{"x": np.random.default_rng(i).normal(size=(1, 8)).astype(np.float32)} for i in range(2)]
nncf.quantize(model, nncf.Dataset(feeds), subset_size=2)
print("env after:", os.environ.get("CI"), os.environ.get("NNCF_CI"))
"""


def _child(code: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NNCF_CI")}
    env.update(HOME=str(home), PYTHONPATH=str(_REPO))
    home.mkdir()
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_openvino_and_nncf_write_nothing_under_home(tmp_path: Path) -> None:
    # the premise: plain imports write their telemetry files under the home folder
    plain = _child("import onnxruntime, openvino", tmp_path / "plain-home")
    assert plain.returncode == 0, plain.stderr[-2000:]
    if not any((tmp_path / "plain-home").iterdir()):
        pytest.skip("these libraries write no telemetry files on import: nothing to keep off")

    ours = _child(_BUILD_STEPS, tmp_path / "home", str(tmp_path / "m.onnx"))
    assert ours.returncode == 0, ours.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == []
    # the variables were set only around the imports and the conversion
    assert "env after: None None" in ours.stdout
