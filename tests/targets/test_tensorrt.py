"""TensorRT backend: everything that runs without TensorRT here, and real engine builds
(marked `tensorrt`) that run where TensorRT and an NVIDIA GPU are present."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError

from compiler.core.contract import Contract, DimRange
from compiler.core.errors import (
    BackendUnavailable,
    BuildError,
    ConfigError,
    ContractError,
    PackageError,
)
from compiler.core.host import GpuInfo, HostInfo, probe_host
from compiler.pipeline.interface import extract_contract
from targets.base import BuildRequest
from targets.tensorrt import (
    BuildSpec,
    CompatibilityRecord,
    EngineBuildJob,
    EngineCache,
    SwitchingRunner,
    TensorRTBackend,
    TensorRTOptions,
    builder_settings,
    check_compatibility,
    decide_engine,
    derive_profiles,
    engine_cache_key,
    preflight,
    read_spec,
    select_profile,
)
from targets.tensorrt.cache import file_digest
from targets.tensorrt.engine import check_build_gpu
from targets.tensorrt.options import BUILDER_FLAGS, NETWORK_FLAGS
from targets.tensorrt.spec import SPEC_FILE
from tests.models import save, tiny_mlp

H100 = GpuInfo(name="NVIDIA H100 80GB HBM3", compute_capability="9.0")
H200 = GpuInfo(name="NVIDIA H200", compute_capability="9.0")
T4 = GpuInfo(name="Tesla T4", compute_capability="7.5")
A10 = GpuInfo(name="NVIDIA A10", compute_capability="8.6")
BATCH = {"batch": DimRange(min=1, opt=4, max=16)}


def _host(gpu: GpuInfo | None = H100, trt: str | None = "10.16.1.11") -> HostInfo:
    """A described host (data, not a probe): which GPU and TensorRT version it has."""
    return HostInfo(
        arch="x86_64", cpu_model="test", cpu_count=2, isa=[], os="Linux",
        gpus=[gpu] if gpu else [], runtimes={"tensorrt": trt} if trt else {},
    )  # fmt: skip


def _record(**kw: object) -> CompatibilityRecord:
    base: dict[str, object] = dict(
        tensorrt_version="10.16.1.11", gpu_name=H100.name, compute_capability="9.0",
        precision="fp16",
    )  # fmt: skip
    base.update(kw)
    return CompatibilityRecord.model_validate(base)


def _mlp_contract(dims: dict[str, DimRange] | None = None) -> Contract:
    return extract_contract(tiny_mlp(), BATCH if dims is None else dims)


def _qdq_mlp() -> onnx.ModelProto:
    """tiny_mlp with the input quantized/dequantized (scale 0.05, zero point 0)."""
    m = tiny_mlp()
    g = m.graph
    g.initializer.extend([
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"),
    ])  # fmt: skip
    q = helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q")
    dq = helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xdq"], name="dq")
    g.node[0].input[0] = "xdq"
    nodes = [q, dq, *g.node]
    del g.node[:]
    g.node.extend(nodes)
    return m


def _request(tmp: Path, precision: str = "fp16", **opts: object) -> BuildRequest:
    return BuildRequest(
        target="gpu", variant=f"trt-{precision}", precision=precision,
        options=TensorRTOptions(**opts), contract=_mlp_contract(), workdir=tmp,
    )  # fmt: skip


def _build(
    tmp: Path, model: onnx.ModelProto | None = None, precision: str = "fp16", **opts: object
):
    src = tmp / "src"
    src.mkdir(parents=True, exist_ok=True)
    path = save(model or tiny_mlp(), src / "model.onnx")
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    return TensorRTBackend().build(path, _request(tmp, precision, **opts), out), out


# ---------------------------------------------------------------------------------- options


def test_options_reject_lean_runtime_without_version_compatibility() -> None:
    with pytest.raises(ValidationError, match="exclude_lean_runtime needs version_compatible"):
        TensorRTOptions(exclude_lean_runtime=True)
    with pytest.raises(ValidationError):
        TensorRTOptions(hardware_compatibility="turing_plus")  # type: ignore[arg-type]


def test_profile_from_contract_dim_ranges() -> None:
    (p,) = derive_profiles(_mlp_contract())
    assert p.inputs["x"].model_dump() == {"min": [1, 8], "opt": [4, 8], "max": [16, 8]}
    assert p.dims == BATCH


def test_profiles_for_several_symbolic_dims_and_inputs() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])
    m = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "seq"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])
    fixed = helper.make_tensor_value_info("fixed", TensorProto.FLOAT, [2, 8])
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x, m, fixed], [y]))
    dims = {"batch": DimRange(min=1, opt=2, max=8), "seq": DimRange(min=16, opt=128, max=512)}
    (p,) = derive_profiles(extract_contract(model, dims))
    assert sorted(p.inputs) == ["mask", "x"]  # static inputs need no profile
    assert p.inputs["x"].max == [8, 512, 8] and p.inputs["mask"].min == [1, 16]


def test_profile_overrides_narrow_the_contract_range() -> None:
    overrides = [
        {"batch": DimRange(min=1, opt=1, max=1)},
        {"batch": DimRange(min=2, opt=8, max=16)},
    ]
    small, large = derive_profiles(_mlp_contract(), overrides)
    assert small.inputs["x"].max == [1, 8] and large.inputs["x"].opt == [8, 8]
    with pytest.raises(ConfigError, match=r"profiles\[0\]: dim 'batch' range \[1, 64\] leaves"):
        derive_profiles(_mlp_contract(), [{"batch": DimRange(min=1, opt=1, max=64)}])
    with pytest.raises(ConfigError, match="'seq' is not a symbolic dim"):
        derive_profiles(_mlp_contract(), [{"seq": DimRange(min=1, opt=1, max=2)}])


def test_profile_needs_a_range_for_every_dynamic_dim() -> None:
    c = _mlp_contract()
    c.dims = {}
    with pytest.raises(ConfigError, match=r"symbolic dims \['batch'\] have no range"):
        derive_profiles(c)


def test_static_model_has_no_profile() -> None:
    contract = extract_contract(tiny_mlp(batch=2))
    assert derive_profiles(contract) == []
    with pytest.raises(ConfigError, match="all static"):
        derive_profiles(contract, [{"batch": DimRange(min=1, opt=1, max=1)}])


@pytest.mark.parametrize(
    ("precision", "opts", "flags", "cleared", "network"),
    [
        ("fp32", {}, [], ["TF32"], []),
        ("fp32", {"tf32": True}, ["TF32"], [], []),
        ("fp16", {}, ["FP16"], ["TF32"], []),
        ("bf16", {}, ["BF16"], ["TF32"], []),
        ("fp16", {"version_compatible": True, "exclude_lean_runtime": True},
         ["EXCLUDE_LEAN_RUNTIME", "FP16", "VERSION_COMPATIBLE"], ["TF32"], []),
        ("fp16", {"strongly_typed": True}, [], [], ["STRONGLY_TYPED"]),
    ],
)  # fmt: skip
def test_builder_settings_from_options(
    precision: str,
    opts: dict[str, object],
    flags: list[str],
    cleared: list[str],
    network: list[str],
) -> None:
    s = builder_settings(TensorRTOptions(**opts), precision, _mlp_contract(), tiny_mlp())
    assert (s.builder_flags, s.cleared_flags, s.network_flags) == (flags, cleared, network)
    assert set(s.builder_flags) | set(s.cleared_flags) <= BUILDER_FLAGS
    assert set(s.network_flags) <= NETWORK_FLAGS
    assert s.quantization == "none" and s.precision == precision


def test_builder_settings_workspace_hardware_level_and_timing_cache() -> None:
    opts = TensorRTOptions(workspace_mib=512, hardware_compatibility="ampere_plus",
                           builder_optimization_level=5, timing_cache=False)  # fmt: skip
    s = builder_settings(opts, "fp16", _mlp_contract(), tiny_mlp())
    assert s.workspace_bytes == 512 << 20
    assert s.hardware_compatibility_level == "AMPERE_PLUS"
    assert s.builder_optimization_level == 5 and s.timing_cache is False
    assert (
        builder_settings(TensorRTOptions(), "fp16", _mlp_contract(), tiny_mlp()).workspace_bytes
        is None
    )


def test_int8_needs_a_qdq_model_and_builds_strongly_typed() -> None:
    with pytest.raises(ConfigError, match="int8 needs a QDQ model"):
        builder_settings(TensorRTOptions(), "int8", _mlp_contract(), tiny_mlp())
    s = builder_settings(TensorRTOptions(), "int8", _mlp_contract(), _qdq_mlp())
    assert s.quantization == "qdq" and s.network_flags == ["STRONGLY_TYPED"]
    assert s.builder_flags == [] and s.cleared_flags == []  # no precision flags with strong typing
    weak = builder_settings(
        TensorRTOptions(strongly_typed=False), "int8", _mlp_contract(), _qdq_mlp()
    )
    assert weak.network_flags == [] and weak.builder_flags == ["FP16", "INT8"]


def test_settings_digest_tracks_content_not_notes() -> None:
    a = builder_settings(TensorRTOptions(), "fp16", _mlp_contract(), tiny_mlp())
    b = builder_settings(TensorRTOptions(), "fp16", _mlp_contract(), tiny_mlp())
    assert a.digest() == b.digest()
    assert a.model_copy(update={"notes": ["x"]}).digest() == a.digest()
    assert (
        builder_settings(TensorRTOptions(), "fp32", _mlp_contract(), tiny_mlp()).digest()
        != a.digest()
    )


def test_build_gpu_limits() -> None:
    s = builder_settings(
        TensorRTOptions(hardware_compatibility="ampere_plus"), "bf16", _mlp_contract(), tiny_mlp()
    )
    why = check_build_gpu(s, T4)
    assert any("ampere_plus" in w for w in why) and any("bf16" in w for w in why)
    assert check_build_gpu(s, A10) == []


# ------------------------------------------------------------------------- cache and compat


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
    assert cache.lookup("k") is None and cache.load_timing_cache(H100, "10.16") == b""
    entry = cache.store("k", b"plan", {"tensorrt_version": "10.16"})
    assert entry.engine.read_bytes() == b"plan"
    assert cache.lookup("k").record == {"tensorrt_version": "10.16"}  # type: ignore[union-attr]
    cache.store_timing_cache(H100, "10.16", b"tc")
    assert (
        cache.load_timing_cache(H100, "10.16") == b"tc"
        and cache.load_timing_cache(H200, "10.16") == b""
    )
    assert not list(tmp_path.rglob("*.tmp-*"))


@pytest.mark.parametrize(
    ("record", "host", "reason"),
    [
        ({}, _host(), None),
        ({}, _host(trt="10.16.1"), None),
        ({}, _host(trt="10.15.1.29"), "needs exactly that version; host has 10.15.1.29"),
        ({}, _host(trt=None), "TensorRT is not importable"),
        ({}, _host(gpu=None), "needs an NVIDIA GPU"),
        ({}, _host(gpu=H200), "ties it to that GPU model"),
        ({}, _host(gpu=A10), "built for compute capability 9.0"),
        ({"hardware_compatibility_level": "SAME_COMPUTE_CAPABILITY"}, _host(gpu=H200), None),
        ({"hardware_compatibility_level": "SAME_COMPUTE_CAPABILITY"}, _host(gpu=A10), "compute capability 9.0"),
        ({"hardware_compatibility_level": "AMPERE_PLUS"}, _host(gpu=A10), None),
        ({"hardware_compatibility_level": "AMPERE_PLUS"}, _host(gpu=T4), "AMPERE_PLUS"),
        ({"version_compatible": True}, _host(trt="10.17.0.5"), None),
        ({"version_compatible": True}, _host(trt="10.15.1.29"), "version-compatible from TensorRT 10.16.1.11"),
        ({"version_compatible": True}, _host(trt="11.0.0.1"), "within major 10"),
        ({"version_compatible": True, "lean_runtime_excluded": True}, _host(trt="10.17.0.5"), "lean runtime excluded"),
    ],
)  # fmt: skip
def test_check_compatibility(record: dict[str, object], host: HostInfo, reason: str | None) -> None:
    why = check_compatibility(_record(**record).model_dump(), host)
    if reason is None:
        assert why == []
    else:
        assert len(why) == 1 and reason in why[0], why


def _prebuilt_runtime(spec: bool = True, **record: object) -> dict[str, object]:
    rt: dict[str, object] = {"engine_mode": "prebuilt", "engine": "model.plan",
                             "compatibility": _record(**record).model_dump(mode="json")}  # fmt: skip
    if spec:
        rt.update(spec=SPEC_FILE, onnx_sha256="d" * 64, settings_digest="s")
    return rt


def test_decide_prebuilt_cached_build_or_fallback(tmp_path: Path) -> None:
    art, cache = tmp_path / "art", tmp_path / "cache"
    d = decide_engine(art, _prebuilt_runtime(), cache, _host())
    assert d.action == "prebuilt" and d.engine == art / "model.plan"

    d = decide_engine(art, _prebuilt_runtime(), cache, _host(gpu=A10))
    assert d.action == "build" and "prebuilt engine refused" in d.reasons[0]
    assert d.cache_key == engine_cache_key("d" * 64, A10, "10.16.1.11", "s")

    d = decide_engine(art, _prebuilt_runtime(spec=False), cache, _host(gpu=A10))
    assert d.action == "fallback" and "compute capability 9.0" in d.reasons[0]

    d = decide_engine(art, _prebuilt_runtime(), None, _host(gpu=A10))
    assert d.action == "fallback" and "no engine cache directory" in d.reasons[-1]

    deferred = {"engine_mode": "deferred", "engine": None, "compatibility": None,
                "spec": SPEC_FILE, "onnx_sha256": "d" * 64, "settings_digest": "s"}  # fmt: skip
    d = decide_engine(art, deferred, cache, _host(trt=None))
    assert (
        d.action == "fallback" and "cannot build here: TensorRT is not importable" in d.reasons[0]
    )

    key = engine_cache_key("d" * 64, A10, "10.16.1.11", "s")
    EngineCache(cache).store(
        key, b"plan", _record(gpu_name=A10.name, compute_capability="8.6").model_dump()
    )
    d = decide_engine(art, deferred, cache, _host(gpu=A10))
    assert d.action == "cached" and d.engine == EngineCache(cache).entry(key) / "engine.plan"

    EngineCache(cache).store(key, b"plan", _record(gpu_name=A10.name, compute_capability="8.6",
                                                   tensorrt_version="10.15.1.29").model_dump())  # fmt: skip
    d = decide_engine(art, deferred, cache, _host(gpu=A10))
    assert d.action == "build" and "cached engine refused" in d.reasons[0]


def test_select_profile() -> None:
    overrides = [
        {"batch": DimRange(min=1, opt=1, max=1)},
        {"batch": DimRange(min=2, opt=8, max=16)},
    ]
    profiles = derive_profiles(_mlp_contract(), overrides)
    assert select_profile(profiles, {"x": (1, 8)}) == 0
    assert select_profile(profiles, {"x": (9, 8)}) == 1
    assert select_profile([], {"x": (3, 8)}) == 0
    with pytest.raises(ContractError, match="fit none of the engine's optimization profiles"):
        select_profile(profiles, {"x": (17, 8)})


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


needs_no_trt = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None and bool(probe_host().gpus),
    reason="this host can build engines, so build: auto makes a prebuilt engine here",
)


@needs_no_trt
def test_build_without_tensorrt_is_deferred_with_a_spec(tmp_path: Path) -> None:
    result, out = _build(tmp_path, precision="fp16", workspace_mib=256)
    assert result.status == "deferred"
    assert sorted(result.files) == sorted(["model.onnx", SPEC_FILE])
    rt = result.runtime
    assert rt["engine_mode"] == "deferred" and rt["engine"] is None and rt["spec"] == SPEC_FILE
    assert result.requirements.gpu and result.requirements.runtime == "tensorrt"
    spec = read_spec(out / SPEC_FILE)
    assert spec.onnx == "model.onnx" and spec.onnx_sha256 == file_digest([out / "model.onnx"])
    assert spec.onnx_sha256 == rt["onnx_sha256"] and spec.settings_digest == spec.settings.digest()
    assert spec.settings.builder_flags == ["FP16"] and spec.settings.workspace_bytes == 256 << 20
    assert spec.settings.profiles[0].inputs["x"].max == [16, 8]
    assert "TensorRT is not importable" in spec.deferred_reason
    assert spec.preflight == [] and "10.15" in spec.preflight_matrix
    assert any("deferred to the serving host" in n for n in result.notes)
    raw = json.loads((out / SPEC_FILE).read_text())
    assert raw["schema"] == "compile-pkg/tensorrt-build-spec" and raw["version"] == 1
    assert str(tmp_path) not in (out / SPEC_FILE).read_text()  # no absolute paths


def test_deferred_spec_is_deterministic(tmp_path: Path) -> None:
    _, out1 = _build(tmp_path / "a", build="deferred")
    _, out2 = _build(tmp_path / "b", build="deferred")
    assert (out1 / SPEC_FILE).read_bytes() == (out2 / SPEC_FILE).read_bytes()


def test_deferred_spec_records_preflight_warnings(tmp_path: Path) -> None:
    m = tiny_mlp()
    m.graph.node.append(helper.make_node("Unique", ["y"], ["u"], name="uniq"))
    with pytest.raises(BuildError, match=r"node 'uniq' \(Unique\)"):
        _build(tmp_path / "strict", m, build="deferred")
    result, out = _build(tmp_path / "warn", m, build="deferred", preflight="warn")
    spec = read_spec(out / SPEC_FILE)
    assert [(f.node, f.severity) for f in spec.preflight] == [("uniq", "error")]
    assert any("uniq" in n for n in result.notes)


@needs_no_trt
def test_prebuilt_required_without_tensorrt_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="prebuilt needs .*TensorRT is not importable"):
        _build(tmp_path, build="prebuilt")


def test_build_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="int8 needs a QDQ model"):
        _build(tmp_path / "a", precision="int8", build="deferred")
    result, out = _build(tmp_path / "b", _qdq_mlp(), precision="int8", build="deferred")
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
                     settings=builder_settings(TensorRTOptions(), "fp32", _mlp_contract(), tiny_mlp()),
                     settings_digest="y")  # fmt: skip
    assert spec.model_dump(by_alias=True)["schema"] == "compile-pkg/tensorrt-build-spec"


# ------------------------------------------------------------------------- serving decisions


@needs_no_trt
def test_runner_refuses_with_reasons_on_a_host_without_tensorrt(tmp_path: Path) -> None:
    result, out = _build(tmp_path)
    runner = TensorRTBackend.runner(out, result.runtime, _mlp_contract(), cache_dir=tmp_path / "c")
    with pytest.raises(BackendUnavailable, match="cannot build here"):
        runner.load()
    avail = TensorRTBackend.runtime_availability()
    assert not avail.ok and "tensorrt" in avail.install
    assert TensorRTBackend.availability("gpu").ok and not TensorRTBackend.availability("cpu").ok


def test_failed_background_build_keeps_serving_the_fallback(tmp_path: Path) -> None:
    """A host that says it has TensorRT and a GPU, where the build then fails: the switching
    runner keeps serving the ONNX Runtime fallback and says why."""
    from targets.onnxruntime.backend import OnnxRuntimeBackend
    from targets.tensorrt.runner import TensorRTRunner

    result, out = _build(tmp_path, build="deferred")
    bogus = dict(result.runtime, onnx_sha256="0" * 64)  # the spec no longer matches: build fails
    pending = TensorRTRunner(out, bogus, _mlp_contract(), tmp_path / "cache", host=_host())
    with pytest.raises(BackendUnavailable, match="being built from the deferred spec"):
        pending.load()
    assert isinstance(pending.build_job, EngineBuildJob)
    assert pending.build_job.wait(timeout=60) is False and pending.build_job.state == "failed"
    ort_rt = {"model": "model.onnx", "graph_optimization_level": "all", "intra_op_num_threads": 1,
              "execution_mode": "sequential"}  # fmt: skip
    fallback = OnnxRuntimeBackend.runner(out, ort_rt, _mlp_contract())
    with SwitchingRunner(fallback, pending) as r:
        y = r.run({"x": np.ones((2, 8), np.float32)})["y"]
        assert y.shape == (2, 4) and r.active is fallback
        assert "build failed" in r.describe()["switching"]


def test_registry_and_default_gpu_pipeline() -> None:
    from targets.registry import BACKENDS

    assert BACKENDS["tensorrt"] is TensorRTBackend
    try:
        from compiler.pipeline.config import VariantConfig
        from compiler.pipeline.pipelines import PIPELINES
    except ImportError as exc:  # pragma: no cover - the lead's modules
        pytest.skip(f"pipelines not importable: {exc}")
    v = VariantConfig.model_validate({"compile": {"backend": "tensorrt", "workspace_mib": 64}})
    assert isinstance(v.compile, TensorRTOptions)
    gpu = PIPELINES["gpu"]["default"]()
    assert gpu["trt-fp16"].precision == "fp16" and gpu["trt-fp16"].compile.backend == "tensorrt"


# ---------------------------------------------------- real TensorRT (needs TensorRT and a GPU)


def _have_trt() -> str:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not importable (pip install 'tensorrt>=10,<11' on a host with an NVIDIA GPU)"
    if not probe_host().gpus:
        return "no NVIDIA GPU (nvidia-smi finds none)"
    return ""


def _reference(model_path: Path, x: np.ndarray) -> np.ndarray:
    from targets.onnxruntime.backend import reference_session

    return reference_session(model_path).run(None, {"x": x})[0]


@pytest.mark.parametrize(("precision", "atol"), [("fp32", 1e-4), ("fp16", 2e-2)])
@pytest.mark.tensorrt
@pytest.mark.skipif(bool(_have_trt()), reason=_have_trt() or "ok")
def test_prebuilt_engine_matches_onnxruntime(tmp_path: Path, precision: str, atol: float) -> None:
    from targets.tensorrt.runner import TensorRTRunner

    result, out = _build(tmp_path, precision=precision, build="prebuilt")
    assert result.status == "built" and {"model.plan", "timing.cache"} <= set(result.files)
    rec = CompatibilityRecord.model_validate(result.runtime["compatibility"])
    assert rec.tensorrt_version == probe_host().runtimes["tensorrt"] and rec.precision == precision
    assert rec.compute_capability == probe_host().gpus[0].compute_capability
    runner = TensorRTRunner(
        out, result.runtime, _mlp_contract(), tmp_path / "cache", background=False
    )
    with runner:
        assert runner.decision is not None and runner.decision.action == "prebuilt"
        for batch in (1, 5, 16):  # min, between, max of the profile
            x = np.random.default_rng(batch).normal(size=(batch, 8)).astype(np.float32)
            got = runner.run({"x": x})["y"]
            np.testing.assert_allclose(got, _reference(out / "model.onnx", x), atol=atol, rtol=atol)
        assert runner.describe()["last_gpu_ms"] > 0


@pytest.mark.tensorrt
@pytest.mark.skipif(bool(_have_trt()), reason=_have_trt() or "ok")
def test_deferred_build_on_first_load_then_cached(tmp_path: Path) -> None:
    from targets.tensorrt.runner import TensorRTRunner

    result, out = _build(tmp_path, precision="fp32", build="deferred")
    assert result.status == "deferred"
    first = TensorRTRunner(out, result.runtime, _mlp_contract(), tmp_path / "cache")
    with pytest.raises(BackendUnavailable, match="being built"):
        first.load()
    assert first.build_job is not None and first.build_job.wait(timeout=600), first.build_job.error
    second = TensorRTRunner(out, result.runtime, _mlp_contract(), tmp_path / "cache")
    with second:
        assert second.decision is not None and second.decision.action == "cached"
        x = np.linspace(-1, 1, 24, dtype=np.float32).reshape(3, 8)
        np.testing.assert_allclose(
            second.run({"x": x})["y"], _reference(out / "model.onnx", x), atol=1e-4
        )
    timing = list((tmp_path / "cache" / "tensorrt" / "timing").glob("*.cache"))
    assert len(timing) == 1 and timing[0].stat().st_size > 0


@pytest.mark.tensorrt
@pytest.mark.skipif(bool(_have_trt()), reason=_have_trt() or "ok")
def test_int8_qdq_engine_builds_and_runs(tmp_path: Path) -> None:
    from targets.tensorrt.runner import TensorRTRunner

    result, out = _build(tmp_path, _qdq_mlp(), precision="int8", build="prebuilt")
    with TensorRTRunner(
        out, result.runtime, _mlp_contract(), tmp_path / "cache", background=False
    ) as r:
        x = np.random.default_rng(0).uniform(-1, 1, (4, 8)).astype(np.float32)
        got, ref = r.run({"x": x})["y"], _reference(out / "model.onnx", x)
        cos = float(np.dot(got.ravel(), ref.ravel()) / np.linalg.norm(got) / np.linalg.norm(ref))
        assert cos > 0.98


@pytest.mark.tensorrt
@pytest.mark.skipif(bool(_have_trt()), reason=_have_trt() or "ok")
def test_parser_errors_name_the_node(tmp_path: Path) -> None:
    m = tiny_mlp()
    m.graph.node.append(helper.make_node("Unique", ["y"], ["u"], name="uniq"))
    m.graph.output.append(helper.make_tensor_value_info("u", TensorProto.FLOAT, None))
    with pytest.raises(BuildError, match="uniq"):
        _build(tmp_path, m, build="prebuilt", preflight="warn")
