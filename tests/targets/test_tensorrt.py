"""TensorRT builds: preflight of ops the ONNX parser cannot take, the deferred build spec where
this host has no TensorRT, and real engine builds and runs (marked `tensorrt`) where TensorRT
and an NVIDIA GPU are present. Options: test_tensorrt_options.py; serving decisions:
test_tensorrt_serving.py."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.core.errors import BackendUnavailable, BuildError, NotApplicable, PackageError
from compiler.core.host import probe_host
from compiler.core.settings import OnnxRuntimeSettings
from targets.registry import BACKENDS
from targets.runner import SwitchingRunner, open_runner
from targets.runtime_index import RUNTIMES
from targets.tensorrt import runtime as trt_runtime
from targets.tensorrt.backend import TensorRTBackend
from targets.tensorrt.cache import file_digest
from targets.tensorrt.compat import CompatibilityRecord
from targets.tensorrt.install import install_advice
from targets.tensorrt.options import TensorRTOptions, builder_settings
from targets.tensorrt.preflight import format_findings, preflight
from targets.tensorrt.spec import SPEC_FILE, BuildSpec, read_spec
from tests.models import tiny_mlp
from tests.targets.builders import qdq_mlp, reference
from tests.targets.tensorrt_data import build, mlp_contract

needs_no_trt = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None and bool(probe_host().gpus),
    reason="this host can build engines, so build: auto makes a prebuilt engine here",
)

# -------------------------------------------------------------------------------- preflight


def _model(nodes: list[onnx.NodeProto], opset: int = 17, **kw: object) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    inits = kw.pop("inits", [])
    g = helper.make_graph(nodes, "g", [x], [y], initializer=inits)  # type: ignore[arg-type]
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], **kw)


def test_preflight_clean_model() -> None:
    assert preflight(tiny_mlp()) == []


def test_preflight_flags_unsupported_ops_per_node() -> None:
    m = _model([
        helper.make_node("Unique", ["x"], ["u"], name="uniq"),
        helper.make_node("Relu", ["x"], ["y"], name="r"),
        helper.make_node("MyOp", ["x"], ["z"], name="custom", domain="com.acme"),
        helper.make_node("FancyNewOp", ["x"], ["w"], name="future"),
    ])  # fmt: skip
    found = {(f.node, f.severity) for f in preflight(m)}
    assert found == {("uniq", "error"), ("custom", "error"), ("future", "warning")}
    msgs = " ".join(f.message for f in preflight(m))
    assert "Unique is not supported" in msgs and "com.acme::MyOp" in msgs and "plugin" in msgs


def test_findings_that_say_the_same_of_many_nodes_are_one_line() -> None:
    # an ORT-optimized transformer: a contrib op at every layer, and one other kind
    m = _model([
        *(helper.make_node("SkipLayerNormalization", ["x"], [f"s{i}"], name=f"sln{i}",
                           domain="com.microsoft") for i in range(5)),
        helper.make_node("Unique", ["x"], ["y"], name="uniq"),
    ])  # fmt: skip
    text = format_findings([f for f in preflight(m) if f.severity == "error"])
    lines = text.split("\n  ")
    assert len(lines) == 2
    assert lines[0].startswith(
        "error: 5 SkipLayerNormalization nodes ('sln0', 'sln1', 'sln2' and 2 more): "
        "custom-domain op 'com.microsoft::SkipLayerNormalization' needs a TensorRT plugin"
    )
    assert lines[1].startswith("error: node 'uniq' (Unique): Unique is not supported")
    # past the limit, the kinds left out and their findings are counted
    assert format_findings(preflight(m), limit=1).endswith("... and 1 more kinds (1 findings)")


def test_preflight_restrictions_opset_and_subgraphs() -> None:
    zp = numpy_helper.from_array(np.array(3, np.int8), "zp")
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    then = helper.make_graph([helper.make_node("Unique", ["x"], ["t"], name="inner")], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])])  # fmt: skip
    m = _model([
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"),
        helper.make_node("MaxPool", ["x"], ["p", "idx"], name="pool", kernel_shape=[2]),
        helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk", sorted=0),
        helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then, else_branch=then),
    ], opset=8, inits=[zp, s])  # fmt: skip
    found = {(f.node, f.severity): f.message for f in preflight(m)}
    assert "zero point must be zero" in found[("q", "error")]
    assert "Indices" in found[("pool", "error")]
    assert "sorted must be 1" in found[("topk", "error")]
    assert ("branch/then_branch/inner", "error") in found
    assert "opset 8 is outside the 9..24" in found[("<model>", "error")]


def test_preflight_accepts_local_functions() -> None:
    fn = helper.make_function("local", "Twice", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])],
                              [helper.make_opsetid("", 17)])  # fmt: skip
    m = _model([helper.make_node("Twice", ["x"], ["y"], domain="local", name="tw")], functions=[fn])
    m.opset_import.append(helper.make_opsetid("local", 1))
    assert preflight(m) == []


# ---------------------------------------------------------------------------------- build


@needs_no_trt
def test_build_without_tensorrt_is_deferred_with_a_spec(tmp_path: Path) -> None:
    result, out = build(tmp_path, variant="fp16", workspace_mib=256)
    assert result.status == "deferred"
    assert sorted(result.files) == sorted(["model.onnx", SPEC_FILE])
    rt = result.runtime
    assert rt.backend == "tensorrt" and rt.engine_mode == "deferred"
    assert rt.engine is None and rt.spec == SPEC_FILE
    assert result.requirements.gpu and result.requirements.runtime == "tensorrt"
    spec = read_spec(out / SPEC_FILE)
    assert spec.onnx == "model.onnx" and spec.onnx_sha256 == file_digest([out / "model.onnx"])
    assert spec.onnx_sha256 == rt.onnx_sha256 and spec.settings_digest == spec.settings.digest()
    assert spec.settings.builder_flags == ["FP16"] and spec.settings.workspace_bytes == 256 << 20
    assert spec.settings.profiles[0].inputs["x"].max == [16, 8]
    assert "TensorRT is not importable" in spec.deferred_reason
    assert spec.preflight == [] and "10.15" in spec.preflight_matrix
    assert any("deferred to the serving host" in n for n in result.notes)
    raw = json.loads((out / SPEC_FILE).read_text())
    assert raw["schema"] == "compile-pkg/tensorrt-build-spec" and raw["version"] == 1
    assert str(tmp_path) not in (out / SPEC_FILE).read_text()  # no absolute paths


def test_deferred_spec_is_deterministic(tmp_path: Path) -> None:
    _, out1 = build(tmp_path / "a", build="deferred")
    _, out2 = build(tmp_path / "b", build="deferred")
    assert (out1 / SPEC_FILE).read_bytes() == (out2 / SPEC_FILE).read_bytes()


def test_deferred_spec_records_preflight_warnings(tmp_path: Path) -> None:
    m = tiny_mlp()
    m.graph.node.append(helper.make_node("Unique", ["y"], ["u"], name="uniq"))
    # documented unsupported: not applicable (skipped with the reason), not a failure
    with pytest.raises(NotApplicable, match=r"node 'uniq' \(Unique\)"):
        build(tmp_path / "strict", m, build="deferred")
    result, out = build(tmp_path / "warn", m, build="deferred", preflight="warn")
    spec = read_spec(out / SPEC_FILE)
    assert [(f.node, f.severity) for f in spec.preflight] == [("uniq", "error")]
    assert any("uniq" in n for n in result.notes)


@needs_no_trt
def test_prebuilt_required_without_tensorrt_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="prebuilt needs .*TensorRT is not importable"):
        build(tmp_path, build="prebuilt")


def test_build_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="int8 needs a QDQ model"):
        build(tmp_path / "a", variant="int8", build="deferred")
    _, out = build(
        tmp_path / "b", qdq_mlp(), variant="int8", build="deferred", int8_unquantized="fp32"
    )
    assert read_spec(out / SPEC_FILE).settings.network_flags == ["STRONGLY_TYPED"]


def test_read_spec_rejects_malformed(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(
        '{"schema": "compile-pkg/tensorrt-build-spec", "version": 9}'
    )
    with pytest.raises(PackageError, match="not a TensorRT build spec this version reads"):
        read_spec(tmp_path / "bad.json")
    with pytest.raises(PackageError, match="cannot read"):
        read_spec(tmp_path / "missing.json")
    spec = BuildSpec(onnx="m.onnx", onnx_files=["m.onnx"], onnx_sha256="x",
                     settings=builder_settings(TensorRTOptions(), "fp32", mlp_contract(), tiny_mlp()),
                     settings_digest="y")  # fmt: skip
    assert spec.model_dump(by_alias=True)["schema"] == "compile-pkg/tensorrt-build-spec"


def test_registry_entry() -> None:
    assert BACKENDS["tensorrt"] is TensorRTBackend
    assert RUNTIMES["tensorrt"] == "targets.tensorrt.runtime"


# ---------------------------------------------------- real TensorRT (needs TensorRT and a GPU)


def _have_trt() -> str:
    if importlib.util.find_spec("tensorrt") is None:
        return f"TensorRT is not importable ({install_advice()})"
    if not probe_host().gpus:
        return "no NVIDIA GPU (nvidia-smi finds none)"
    return ""


def needs_trt(test: Callable[..., None]) -> Callable[..., None]:
    skip = pytest.mark.skipif(bool(_have_trt()), reason=_have_trt() or "ok")
    return pytest.mark.tensorrt(skip(test))


@pytest.fixture(autouse=True)
def _compile_cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prebuilt engines reuse the host's timing cache: keep it out of the user's home."""
    monkeypatch.setenv("COMPILE_PKG_CACHE", str(tmp_path / "compile-cache"))


def _ref(out: Path, x: np.ndarray) -> np.ndarray:
    return reference(out / "model.onnx", [{"x": x}])[0]["y"]


@pytest.mark.parametrize(("variant", "atol"), [("fp32", 1e-4), ("fp16", 2e-2)])
@needs_trt
def test_prebuilt_engine_matches_onnxruntime(tmp_path: Path, variant: str, atol: float) -> None:
    result, out = build(tmp_path, variant=variant, build="prebuilt")
    assert result.status == "built" and {"model.plan", "timing.cache"} <= set(result.files)
    rec = CompatibilityRecord.model_validate(result.runtime.compatibility)
    assert rec.tensorrt_version == probe_host().runtimes["tensorrt"] and rec.precision == variant
    assert rec.compute_capability == probe_host().gpus[0].compute_capability
    with open_runner("tensorrt", out, result.runtime, mlp_contract(), cache_dir=tmp_path) as r:
        assert r.describe()["engine"] == "prebuilt"
        kept = []
        for batch in (1, 5, 16, 5):  # min, between, max of the profile, and back
            x = np.random.default_rng(batch).normal(size=(batch, 8)).astype(np.float32)
            kept.append((r.run({"x": x})["y"], _ref(out, x)))
        for got, want in kept:  # TrtRunner reuses its output buffers: each result is a copy
            np.testing.assert_allclose(got, want, atol=atol, rtol=atol)
        assert float(r.describe()["last_ms"]) > 0


@needs_trt
def test_deferred_build_serves_the_fallback_then_switches(tmp_path: Path) -> None:
    result, out = build(tmp_path, variant="fp32", build="deferred")
    assert result.status == "deferred"
    cache = tmp_path / "cache"
    pending = open_runner("tensorrt", out, result.runtime, mlp_contract(), cache_dir=cache)
    with pytest.raises(BackendUnavailable, match="being built"):
        pending.load()
    job = pending.build_job
    assert job is not None
    ort = OnnxRuntimeSettings(model="model.onnx", intra_op_num_threads=1)
    fallback = open_runner("onnxruntime", out, ort, mlp_contract())
    x = np.linspace(-1, 1, 24, dtype=np.float32).reshape(3, 8)
    with SwitchingRunner(fallback, pending) as r:
        assert job.wait(timeout=600), job.error  # type: ignore[attr-defined]
        np.testing.assert_allclose(r.run({"x": x})["y"], _ref(out, x), atol=1e-4)
        assert r.active is pending and "switched" in str(r.describe()["switching"])
    again = trt_runtime.load(out, result.runtime, ["y"], cache_dir=cache)  # type: ignore[arg-type]
    assert again.describe()["engine"] == "cached"
    again.close()
    timing = list((cache / "tensorrt" / "timing").glob("*.cache"))
    assert len(timing) == 1 and timing[0].stat().st_size > 0


@needs_trt
def test_int8_qdq_engine_builds_and_runs(tmp_path: Path) -> None:
    result, out = build(tmp_path, qdq_mlp(), variant="int8", build="prebuilt")
    loaded = trt_runtime.load(out, result.runtime, ["y"], cache_dir=tmp_path, background=False)  # type: ignore[arg-type]
    x = np.random.default_rng(0).uniform(-1, 1, (4, 8)).astype(np.float32)
    got, ref = loaded.run({"x": x})["y"], _ref(out, x)
    loaded.close()
    cos = float(np.dot(got.ravel(), ref.ravel()) / np.linalg.norm(got) / np.linalg.norm(ref))
    assert cos > 0.98


@needs_trt
def test_parser_errors_name_the_node(tmp_path: Path) -> None:
    m = tiny_mlp()
    m.graph.node.append(helper.make_node("Unique", ["y"], ["u"], name="uniq"))
    m.graph.output.append(helper.make_tensor_value_info("u", TensorProto.FLOAT, None))
    with pytest.raises(BuildError, match="uniq"):
        build(tmp_path, m, build="prebuilt", preflight="warn")


@needs_trt
def test_data_dependent_output_shape_runs(tmp_path: Path) -> None:
    """NonZero's output shape depends on the data: TrtRunner gives it an output allocator."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [2, None])
    g = helper.make_graph([helper.make_node("NonZero", ["x"], ["y"], name="nz")], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    result, out = build(tmp_path, m, variant="fp32", build="prebuilt")
    loaded = trt_runtime.load(out, result.runtime, ["y"], cache_dir=tmp_path, background=False)  # type: ignore[arg-type]
    feed = np.array([[0, 1, 0, 2, 0, 0, 3, 0]] * 2, np.float32)
    got = loaded.run({"x": feed})["y"]
    loaded.close()
    np.testing.assert_array_equal(got, np.stack(np.nonzero(feed)))


@needs_trt
def test_bf16_engine_io_goes_in_as_bits_and_comes_back_as_float32(tmp_path: Path) -> None:
    """numpy has no bfloat16: the runtime feeds the bits and decodes the raw output bytes."""
    gpu = probe_host().gpus[0]
    if tuple(int(p) for p in gpu.compute_capability.split(".")) < (8, 0):
        pytest.skip(f"bf16 needs compute capability 8.0+; {gpu.name} is {gpu.compute_capability}")
    bf16 = TensorProto.BFLOAT16
    x = helper.make_tensor_value_info("x", bf16, ["batch", 8])
    y = helper.make_tensor_value_info("y", bf16, ["batch", 8])
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Relu", ["xf"], ["r"]),
        helper.make_node("Cast", ["r"], ["y"], to=bf16),
    ]
    g = helper.make_graph(nodes, "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    result, out = build(tmp_path, m, variant="bf16", build="prebuilt")  # BF16 flag set
    loaded = trt_runtime.load(out, result.runtime, ["y"], cache_dir=tmp_path, background=False)  # type: ignore[arg-type]
    feed = (np.arange(-8, 8, dtype=np.float32) / 4).reshape(2, 8)  # exact in bf16
    got = loaded.run({"x": feed.astype(ml_dtypes.bfloat16)})["y"]
    loaded.close()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.maximum(feed, 0))
