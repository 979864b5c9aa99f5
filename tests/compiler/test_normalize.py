from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.core.contract import Contract, DimRange
from compiler.core.errors import ConfigError, ContractError, InputModelError
from compiler.pipeline.data import resolve_domains
from compiler.pipeline.interface import as_returned, extract_contract
from compiler.pipeline.normalize import (
    load_onnx,
    normalize_model,
    parse_input_spec,
    save_model,
    source_digest,
)
from compiler.pipeline.probe import (
    CANDIDATES,
    MAX_FACTOR,
    concatenated_dims,
    range_dims,
    returned_shapes,
)
from compiler.pipeline.userdata import data_shapes, observed_sizes
from tests.models import tiny_mlp


def test_external_data_is_read_and_enters_the_digest(tmp_path: Path) -> None:
    model = tiny_mlp()
    path = tmp_path / "ext.onnx"
    onnx.save_model(
        model,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.data",
        size_threshold=0,
    )
    loaded = load_onnx(path)
    w1 = onnx.numpy_helper.to_array(next(i for i in loaded.graph.initializer if i.name == "w1"))
    assert w1.shape == (8, 16)
    before = source_digest(path)
    data = tmp_path / "ext.data"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert source_digest(path) != before
    data.unlink()
    with pytest.raises(InputModelError, match="external data file ext.data is missing"):
        source_digest(path)


def test_old_opset_is_upgraded(tmp_path: Path) -> None:
    model, record = normalize_model(tiny_mlp(opset=11), "old.onnx", min_opset=13)
    assert record == {"opset_source": 11, "opset_upgraded_to": 13, "named_dims": {}}
    assert next(o.version for o in model.opset_import if o.domain == "") == 13


def test_initializers_listed_as_inputs_are_taken_out_so_the_reference_folds_them(
    tmp_path: Path,
) -> None:
    """An export that lists every weight as a graph input too at IR 4 or later (torch's
    keep_initializers_as_inputs): ONNX Runtime then reads each as a default a caller may
    override and folds nothing through it (here a weight's Mul by 2 stays a node; at
    IR 3, where every initializer had to be an input, it folds them). Normalized, the inputs
    are the contract's, the outputs are the same, and the Mul is folded away."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 1, (8, 4)).astype(np.float32), "w")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["w", "two"], ["w2"]),
            helper.make_node("MatMul", ["x", "w2"], ["y"]),
        ],
        "zoo",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 4]),
            helper.make_tensor_value_info("two", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [w, two],
    )
    old = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    old.ir_version = 4
    onnx.checker.check_model(old)

    def optimized(model: onnx.ModelProto, name: str) -> tuple[list[str], np.ndarray]:
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(tmp_path / name)
        sess = ort.InferenceSession(
            model.SerializeToString(), so, providers=["CPUExecutionProvider"]
        )
        y = sess.run(None, {"x": np.ones((2, 8), np.float32)})[0]
        return [n.op_type for n in onnx.load(tmp_path / name).graph.node], y

    ops_before, y_before = optimized(old, "before.onnx")
    assert "Mul" in ops_before  # the overridable weight is not folded
    model, record = normalize_model(old, "zoo.onnx", min_opset=13)
    assert record["initializer_inputs_dropped"] == 2
    assert [i.name for i in model.graph.input] == ["x"] and model.ir_version >= 4
    assert [i.name for i in extract_contract(model).inputs] == ["x"]
    ops_after, y_after = optimized(model, "after.onnx")
    assert "Mul" not in ops_after
    np.testing.assert_allclose(y_after, y_before, rtol=1e-6)


def test_nodes_that_share_a_name_get_names_of_their_own() -> None:
    """A converter that names every node alike ('node'): ONNX Runtime refused the model
    ("two nodes with same node name") and the build stopped at the reference. Normalized,
    each name is unique, an unnamed node stays unnamed, and the model runs as before."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="node"),
        helper.make_node("Neg", ["a"], ["b"], name="node"),
        helper.make_node("Abs", ["b"], ["c"]),
        helper.make_node("Relu", ["c"], ["y"], name="node"),
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "alike",
        [helper.make_tensor_value_info("x", f, ["N", 4])],
        [helper.make_tensor_value_info("y", f, ["N", 4])],
    )
    alike = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(Exception, match="same node name"):
        ort.InferenceSession(alike.SerializeToString(), providers=["CPUExecutionProvider"])
    model, record = normalize_model(alike, "alike.onnx")
    assert record["nodes_renamed"] == 2
    assert [n.name for n in model.graph.node] == ["node", "node_1", "", "node_2"]
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], [[0.0, 2.0, 0.0, 4.0]])


def test_model_local_functions_are_inlined_so_every_backend_reads_the_model() -> None:
    """A module exported as a model-local function (torch's export_modules_as_functions):
    OpenVINO cannot read the model, ONNX Runtime runs it. Normalized, the function's nodes
    are in the graph, its domain's import is gone, the outputs are the same, and OpenVINO
    reads it."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    ov = pytest.importorskip("openvino")
    body = [
        helper.make_node("Mul", ["a", "a"], ["sq"]),
        helper.make_node("Add", ["sq", "a"], ["out"]),
    ]
    fn = helper.make_function(
        "local", "SqPlus", ["a"], ["out"], body, [helper.make_opsetid("", 17)]
    )
    graph = helper.make_graph(
        [
            helper.make_node("SqPlus", ["x"], ["h"], domain="local", name="f1"),
            helper.make_node("SqPlus", ["h"], ["y"], domain="local", name="f2"),
        ],
        "with_functions",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
        functions=[fn],
    )
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)

    def run(m: onnx.ModelProto) -> np.ndarray:
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"x": x})[0]

    core = ov.Core()
    with pytest.raises(Exception):  # noqa: B017 - OpenVINO's own error types
        core.read_model(model.SerializeToString(), b"")
    expected = run(model)
    normalized, record = normalize_model(model, "fn.onnx")
    assert record["functions_inlined"] == ["local:SqPlus"]
    assert not normalized.functions
    assert [o.domain for o in normalized.opset_import] == [""]
    assert sorted(n.op_type for n in normalized.graph.node) == ["Add", "Add", "Mul", "Mul"]
    np.testing.assert_allclose(run(normalized), expected, rtol=1e-6)
    core.read_model(normalized.SerializeToString(), b"")


def _imports(model: onnx.ModelProto) -> list[tuple[str, int]]:
    return [(o.domain, o.version) for o in model.opset_import]


def test_opset_imports_are_made_canonical_so_quantizers_read_them(tmp_path: Path) -> None:
    """skl2onnx declares the ONNX domain twice after ai.onnx.ml: ONNX Runtime's quantizer
    refused that ("Failed to find proper ai.onnx domain") and NNCF read ai.onnx.ml's
    version as the model's opset. Normalized, each domain is declared once, ONNX first."""
    from onnxruntime.quantization import quantize_dynamic

    model = tiny_mlp(opset=17)
    del model.opset_import[:]
    for domain, version in (("ai.onnx.ml", 3), ("", 17), ("", 17)):
        model.opset_import.add(domain=domain, version=version)
    onnx.save(model, tmp_path / "skl.onnx")
    with pytest.raises(ValueError, match="ai.onnx domain"):
        quantize_dynamic(tmp_path / "skl.onnx", tmp_path / "q0.onnx")
    normalized, record = normalize_model(model, "skl.onnx")
    assert _imports(normalized) == [("", 17), ("ai.onnx.ml", 3)]
    assert record["opset_imports"].endswith("[('ai.onnx', 17), ('ai.onnx.ml', 3)]")
    onnx.save(normalized, tmp_path / "canonical.onnx")
    quantize_dynamic(tmp_path / "canonical.onnx", tmp_path / "q1.onnx")
    assert any(n.op_type == "MatMulInteger" for n in onnx.load(tmp_path / "q1.onnx").graph.node)
    _, plain = normalize_model(tiny_mlp(opset=17), "plain.onnx")
    assert "opset_imports" not in plain  # already canonical: nothing recorded

    model.opset_import.add(domain="ai.onnx.ml", version=2)
    with pytest.raises(InputModelError, match=r"skl.onnx: .*'ai.onnx.ml': \[2, 3\]"):
        normalize_model(model, "skl.onnx")


def test_bad_files_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputModelError, match="no such file"):
        load_onnx(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not protobuf" * 10)
    with pytest.raises(InputModelError, match="junk.onnx: not a valid ONNX model"):
        load_onnx(junk)


def test_checker_failure_names_the_model() -> None:
    bad = tiny_mlp()
    bad.graph.node[0].input[1] = "does_not_exist"
    with pytest.raises(InputModelError, match="bad.onnx: fails onnx.checker"):
        normalize_model(bad, "bad.onnx")


def test_an_output_with_no_shape_gets_the_inferred_one() -> None:
    """ONNX Runtime runs a model whose graph output declares no shape (not even a rank);
    onnx.checker refuses it. Normalize gives it the shape ONNX shape inference finds."""
    model = tiny_mlp()
    out = model.graph.output[0]
    out.type.tensor_type.ClearField("shape")
    with pytest.raises(onnx.checker.ValidationError, match="shape"):
        onnx.checker.check_model(model)
    fixed, record = normalize_model(model, "bare.onnx")
    assert record["output_shapes_inferred"] == [out.name]
    dims = fixed.graph.output[0].type.tensor_type.shape.dim
    assert len(dims) == 2 and dims[1].dim_value > 0


def test_input_spec_parsing() -> None:
    s = parse_input_spec("x:float32:[batch,3,224,224]")
    assert (s.name, s.dtype, s.shape) == ("x", "float32", ("batch", 3, 224, 224))
    with pytest.raises(InputModelError, match="expected NAME:DTYPE"):
        parse_input_spec("x:[1,2]")


def test_torch_module_is_exported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    torch = pytest.importorskip("torch", reason="torch is the optional [torch] extra")
    pytest.importorskip("onnxscript", reason="torch.onnx.export needs onnxscript")
    mod = tmp_path / "my_models.py"
    mod.write_text(
        "import torch\n"
        "def small():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from compiler.pipeline.config import resolve_config
    from compiler.serving.loader import load
    from tests.compiler.helpers import build_source

    out = build_source(
        "my_models:small",
        ["x:float32:[batch,8]"],
        tmp_path / "pkg",
        resolve_config({"latency": {"runs": 3}}, ["cpu"]),
    )
    c = out.manifest.contract
    assert [(t.name, t.shape) for t in c.inputs] == [("x", ["batch", 8])]
    x = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    import my_models  # type: ignore[import-not-found]

    expected = my_models.small()(torch.from_numpy(x)).detach().numpy()
    with load(tmp_path / "pkg") as s:
        got = s.run({"x": x})
    np.testing.assert_allclose(next(iter(got.values())), expected, atol=1e-5)
    assert out.manifest.source.kind == "torch"
    # exported by the torch.export-based exporter (opset 18), the symbolic dim given to it in
    # its own form; the TorchScript fallback writes opset 17
    reference = onnx.load(str(tmp_path / "pkg" / "reference" / "model.onnx"))
    assert {o.domain: o.version for o in reference.opset_import}[""] == 18
    assert not [w for w in recwarn if "dynamic_axes" in str(w.message)]


def test_torch_module_is_exported_at_sizes_torch_export_keeps_dynamic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.export takes a dim an example input gives 1 as the constant 1: a transformer
    layer exported from size-1 examples (the default opt) ran at batch 1 and length 1 only,
    and the package said so. Examples are now 2 at axis 0 and 64 elsewhere; a module that
    takes none of those is exported at 1 as before, and the probe finds what it takes."""
    torch = pytest.importorskip("torch", reason="torch is the optional [torch] extra")
    pytest.importorskip("onnxscript", reason="torch.onnx.export needs onnxscript")
    (tmp_path / "layers.py").write_text(
        "import torch\n"
        "def encoder():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, dropout=0.0)\n"
        "class Positions(torch.nn.Module):  # adds a [1, 16, 8] table: length 16 only\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.table = torch.nn.Parameter(torch.ones(1, 16, 8))\n"
        "    def forward(self, x):\n"
        "        return x + self.table\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from compiler.pipeline.config import load_config
    from compiler.serving.loader import load
    from tests.compiler.helpers import build_source

    cfg = load_config(Path(__file__).with_name("ort_only.yaml"), ["cpu"])
    out = build_source("layers:encoder", ["x:float32:[batch,seq,8]"], tmp_path / "enc", cfg)
    dims = out.manifest.contract.dims
    assert dims["batch"].max == 64 and dims["seq"].max > 64, dims
    x = np.random.default_rng(0).normal(size=(3, 5, 8)).astype(np.float32)
    import layers  # type: ignore[import-not-found]

    expected = layers.encoder().eval()(torch.from_numpy(x)).detach().numpy()
    with load(tmp_path / "enc") as s:
        got = s.run({"x": x})
    np.testing.assert_allclose(next(iter(got.values())), expected, atol=1e-5)

    out = build_source("layers:Positions", ["x:float32:[batch,seq,8]"], tmp_path / "pos", cfg)
    assert out.manifest.contract.dims["seq"] == DimRange(min=16, opt=16, max=16)


# --------------------------------------------------------------------------- dims: naming, probing


def _reshaped(inputs: dict[str, list], targets: dict[str, list[int]]) -> onnx.ModelProto:
    """Each float input reshaped to a fixed shape: only sizes that fit are accepted."""
    nodes, inits, outputs = [], [], []
    for name in inputs:
        target = targets[name]
        inits.append(onnx.numpy_helper.from_array(np.asarray(target, np.int64), f"{name}_shape"))
        nodes.append(onnx.helper.make_node("Reshape", [name, f"{name}_shape"], [f"{name}_out"]))
        shape = [None if t < 0 else t for t in target]
        outputs.append(onnx.helper.make_tensor_value_info(f"{name}_out", 1, shape))
    graph = onnx.helper.make_graph(
        nodes,
        "g",
        [onnx.helper.make_tensor_value_info(n, 1, s) for n, s in inputs.items()],
        outputs,
        inits,
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _probed(model: onnx.ModelProto, tmp_path: Path) -> Contract:
    model, record = normalize_model(model, "m.onnx")
    contract = extract_contract(model, {}, record["named_dims"])
    path = save_model(model, tmp_path / "norm")
    return range_dims(path, contract, resolve_domains(contract, {}), "m.onnx")


def test_normalize_names_question_marks_and_minus_one_apart() -> None:
    model = _reshaped({"x": [1, "?", "?"]}, {"x": [1, 4]})
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_value = -1
    model, record = normalize_model(model, "m.onnx")
    shape = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert shape == ["x_d0", "x_d1", "x_d2"]
    assert record["named_dims"]["x_d0"] == "input 'x' axis 0 (was -1)"
    assert record["named_dims"]["x_d2"] == "input 'x' axis 2 (was '?')"


def test_probing_finds_the_one_size_a_dim_takes(tmp_path: Path) -> None:
    c = _probed(_reshaped({"x": [1, "?"]}, {"x": [1, 48]}), tmp_path)
    assert c.dims["x_d1"] == DimRange(min=48, opt=48, max=48)
    origin = c.dim_origins["x_d1"]
    assert origin.source == "probed" and origin.probes > 1
    assert "min 48 (32 rejected)" in origin.note and "max 48 (64 rejected)" in origin.note


def test_probing_finds_dims_that_must_take_different_sizes_together(tmp_path: Path) -> None:
    """An audio length that must be 48 and an LSTM-state batch that must be 1, as in a VAD."""
    model = _reshaped({"x": [1, "len"], "state": [2, "?", 8]}, {"x": [1, 48], "state": [2, 1, 8]})
    c = _probed(model, tmp_path)
    assert (c.dims["len"].opt, c.dims["state_d1"].opt) == (48, 1)
    assert c.input_shapes() == {"x": (1, 48), "state": (2, 1, 8)}


def test_probing_a_dim_the_model_takes_at_any_size(tmp_path: Path) -> None:
    model = _reshaped({"x": ["batch", "?"]}, {"x": [-1]})
    c = _probed(model, tmp_path)
    assert c.dims["x_d1"] == DimRange(min=1, opt=CANDIDATES[0], max=CANDIDATES[0] * MAX_FACTOR)
    assert c.dim_origins["batch"].source == "batch"  # axis 0: the batch default, not probed


def test_a_batch_the_model_cannot_take_is_found_at_2(tmp_path: Path) -> None:
    """An export that declares a dynamic batch but reshapes to a fixed 1 inside, or returns
    one row whatever the batch: the batch default claimed 1..64 and a batch of 8 failed only
    when served. Both are checked at 2 and given 1..1, saying why; batches that must agree
    across inputs (each named its own) are checked together and keep the default."""
    fixed = _probed(_reshaped({"x": ["N", 4]}, {"x": [1, 4]}), tmp_path / "a")
    assert fixed.dims["N"] == DimRange(min=1, opt=1, max=1)
    note = fixed.dim_origins["N"].note
    assert "runs at batch 1 only: the reference rejects N=2" in note and "fix the export" in note

    f = onnx.TensorProto.FLOAT
    one = onnx.numpy_helper.from_array(np.array([1], np.int64), "one")
    zero = onnx.numpy_helper.from_array(np.array([0], np.int64), "zero")
    one_row = onnx.helper.make_model(  # y = x[0:1], declared [N, 4]
        onnx.helper.make_graph(
            [onnx.helper.make_node("Slice", ["x", "zero", "one"], ["y"])],
            "g",
            [onnx.helper.make_tensor_value_info("x", f, ["N", 4])],
            [onnx.helper.make_tensor_value_info("y", f, ["N", 4])],
            [zero, one],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 17)],
    )
    c = _probed(one_row, tmp_path / "b")
    assert c.dims["N"].max == 1
    assert "output 'y' comes back [1, 4], not 2 on axis 0" in c.dim_origins["N"].note

    together = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Add", ["x", "y"], ["z"])],
            "g",
            [
                onnx.helper.make_tensor_value_info("x", f, ["B1", 4]),
                onnx.helper.make_tensor_value_info("y", f, ["B2", 4]),
            ],
            [onnx.helper.make_tensor_value_info("z", f, ["B1", 4])],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 17)],
    )
    c = _probed(together, tmp_path / "c")
    assert c.dims["B1"] == c.dims["B2"] == DimRange(min=1, opt=1, max=64)
    # together, then each alone (at 2 beside 1 it broadcasts: not tied)
    assert c.dim_origins["B1"].probes == 3 and "batch default" in c.dim_origins["B1"].note
    assert c.equal_dims == []


def test_a_dim_s_opt_is_the_size_most_of_the_user_s_data_has(tmp_path: Path) -> None:
    """A static build is made at the dims' opts: the data's sizes, not the first size the
    reference took (ppocr_rec's gpu libraries were built for 64-pixel lines beside 48-pixel
    data). The range still reaches what probing finds, and every size the data has."""
    model, record = normalize_model(_reshaped({"x": ["batch", "?"]}, {"x": [-1]}), "m.onnx")
    contract = extract_contract(model, {}, record["named_dims"])
    path = save_model(model, tmp_path / "norm")
    domains = resolve_domains(contract, {})
    sizes = [48, 100, 100, 2000, 37]  # 2000: beyond 8x the opt that probing stops at
    c = range_dims(path, contract, domains, "m.onnx", observed={"x_d1": sizes})
    assert c.dims["x_d1"] == DimRange(min=1, opt=100, max=2000)
    note = c.dim_origins["x_d1"].note
    assert note.startswith("opt 100: the size 2 of the user's 5 feeds have; min 1")
    assert note.endswith("; widened to 1..2000, the sizes the data has")
    tie = range_dims(path, contract, domains, "m.onnx", observed={"x_d1": [64, 32]})
    assert tie.dims["x_d1"].opt == 32  # the smaller where counts tie: deterministic


def test_the_data_s_sizes_are_read_from_the_npz_headers(tmp_path: Path) -> None:
    model, record = normalize_model(_reshaped({"x": ["batch", "?"]}, {"x": [-1]}), "m.onnx")
    contract = extract_contract(model, {}, record["named_dims"])
    folder = tmp_path / "data"
    folder.mkdir()
    np.savez(folder / "a.npz", x=np.zeros((1, 48), np.float32))  # one feed
    np.savez(folder / "b.npz", x=np.zeros((3, 1, 20), np.float32))  # three stacked feeds
    np.savez(folder / "c.npz", y=np.zeros((1, 5), np.float32))  # not this model's: ignored
    (folder / "d.npz").write_bytes(b"not a zip")  # unreadable: the data node names it
    shapes = data_shapes([folder])
    assert (
        shapes[str(folder / "b.npz")] == {"x": [3, 1, 20]} and str(folder / "d.npz") not in shapes
    )
    assert observed_sizes(shapes, contract) == {"batch": [1, 1, 1, 1], "x_d1": [48, 20, 20, 20]}


def _kv_step() -> onnx.ModelProto:
    """A decoder step's lengths: the cache [1, past, 4] and the new keys [1, new, 4] are
    concatenated and masked by an attention mask [1, total]: total must be past + new."""
    h = onnx.helper
    nodes = [
        h.make_node("Concat", ["past", "new"], ["keys"], axis=1),
        h.make_node("Unsqueeze", ["mask", "last"], ["mask3"]),
        h.make_node("Add", ["keys", "mask3"], ["y"]),
    ]
    graph = h.make_graph(
        nodes,
        "kv",
        [
            h.make_tensor_value_info("past", 1, [1, "past", 4]),
            h.make_tensor_value_info("new", 1, [1, "new", 4]),
            h.make_tensor_value_info("mask", 1, [1, "total"]),
        ],
        [h.make_tensor_value_info("y", 1, [1, "total", 4])],
        [onnx.numpy_helper.from_array(np.asarray([2], np.int64), "last")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_dims_that_move_only_together_are_ranged_together(tmp_path: Path) -> None:
    """No length of a decoder step moves alone (total = past + new); scaled together by
    powers of two they do, so the package takes one new token on a short cache, not only
    the opt sizes."""
    c = _probed(_kv_step(), tmp_path)
    # past's min 0, and total's 1 with it: test_an_empty_cache_is_taken...
    assert c.dims["past"] == DimRange(min=0, opt=128, max=1024)
    assert c.dims["new"] == DimRange(min=1, opt=128, max=1024)
    assert c.dims["total"] == DimRange(min=1, opt=256, max=2048)
    note = c.dim_origins["past"].note
    assert "min 128 (96 rejected)" in note and "min 1 together with new=1, total=2" in note
    step = {
        "past": np.zeros((1, 5, 4), np.float32),
        "new": np.zeros((1, 1, 4), np.float32),
        "mask": np.zeros((1, 6), np.float32),
    }
    assert set(c.validate_feeds(step)) == {"past", "new", "mask"}


def test_an_empty_cache_is_taken_where_a_concat_extends_it(tmp_path: Path) -> None:
    """A decoder's first step has no cache: past 0, a total of the new tokens alone. The
    probe's sizes start at 1, so the package refused the first step ('size 0 outside the
    allowed range [1, 1024]'). A dim a Concat extends is tried empty, with the total one
    less; the new tokens, concatenated too, are not taken empty where the outputs then
    contradict their dims (keys of past + 0 rows against a mask of 1)."""
    c = _probed(_kv_step(), tmp_path)
    assert (c.dims["past"].min, c.dims["new"].min, c.dims["total"].min) == (0, 1, 1)
    note = c.dim_origins["past"].note
    assert note.endswith(
        "min 0 (with new=1, total=1): a Concat extends the input along 'past', and the "
        "reference takes it empty (a decoder's first step, on an empty cache)"
    )
    assert c.dim_origins["total"].note.endswith("; min 1 with past=0, as an empty past takes it")
    first = {
        "past": np.zeros((1, 0, 4), np.float32),
        "new": np.zeros((1, 1, 4), np.float32),
        "mask": np.zeros((1, 1), np.float32),
    }
    assert set(c.validate_feeds(first)) == {"past", "new", "mask"}
    assert concatenated_dims(onnx.load(tmp_path / "norm" / "model.onnx"), c) == ["past", "new"]


def test_a_decoder_s_data_gives_opts_one_feed_has_and_widens_to_its_empty_cache(
    tmp_path: Path,
) -> None:
    """Generation data: prompts on an empty cache (past 0) and steps of one token. Each
    dim's most common size (past 0, new 1, total 7) is no feed's, and the reference refused
    it: the probe started over at 128 and the data's past 0 was then refused ('outside the
    allowed range'), so the build stopped. The opts are now the sizes most feeds have
    together (never a 0), and the ranges reach every size of the data."""
    model, record = normalize_model(_kv_step(), "m.onnx")
    contract = extract_contract(model, {}, record["named_dims"])
    path = save_model(model, tmp_path / "norm")
    feeds = [(0, 7, 7), (0, 7, 7), (0, 5, 5), (6, 1, 7), (6, 1, 7), (6, 1, 7), (9, 1, 10)]
    observed = {d: [f[i] for f in feeds] for i, d in enumerate(("past", "new", "total"))}
    c = range_dims(path, contract, resolve_domains(contract, {}), "m.onnx", observed=observed)
    assert {d: c.dims[d].opt for d in observed} == {"past": 6, "new": 1, "total": 7}
    assert c.dims["past"].min == 0 and c.dims["new"].max >= 7 and c.dims["total"].max >= 10
    assert c.dim_origins["past"].note.startswith(
        "opt 6: the sizes 3 of the user's 7 feeds have together;"
    )


def _sliced_kv_step(one_new: bool = False) -> onnx.ModelProto:
    """`_kv_step` whose mask is cut to the keys' length first (GPT-2's causal mask is): a
    mask longer than past + new runs, and only the declared `total` of the output says it
    was not the total. `one_new`: one new token a step ([1, 1, 4])."""
    model = _kv_step()
    h = onnx.helper
    cut = [
        h.make_node("Shape", ["keys"], ["keys_shape"]),
        h.make_node("Slice", ["keys_shape", "one", "two"], ["length"]),
        h.make_node("Slice", ["mask", "zero", "length", "one"], ["mask_cut"]),
    ]
    model.graph.node[1].input[0] = "mask_cut"
    for node in reversed(cut):
        model.graph.node.insert(1, node)
    model.graph.initializer.extend(
        onnx.numpy_helper.from_array(np.asarray([v], np.int64), name)
        for name, v in (("zero", 0), ("one", 1), ("two", 2))
    )
    if one_new:
        model.graph.input[1].type.tensor_type.shape.dim[1].dim_value = 1
    return model


def test_sizes_whose_outputs_contradict_their_declared_dims_are_not_taken(
    tmp_path: Path,
) -> None:
    """A decoder step that runs with a mask longer than past + new (it slices the mask)
    returns y with past + new rows where it declares `total`. One new token a step: the
    first sizes that run (past 128, total 224) contradict the model's own shapes, so the
    probe takes the size the output gives (total 129) and rejects contradicting sizes from
    then on; past and total range together, moved by one amount (129 does not halve). With
    new as long as past, the first sizes agree; a past made shorter alone
    under the same mask (which ran) is rejected too: the lengths range together, as for
    `_kv_step`, instead of past 1..128 beside total 256..2048 (a GPT-2 export did)."""
    c = _probed(_sliced_kv_step(one_new=True), tmp_path / "one")
    assert c.dims["past"] == DimRange(min=0, opt=128, max=1024)  # empty: the first step
    assert c.dims["total"] == DimRange(min=1, opt=129, max=1025)  # moved by one amount
    note = c.dim_origins["total"].note
    assert "output 'y' came back with 129 on axis 1, which it declares as input dim " in note
    assert "'total', given 224" in note and "contradict the dims they declare" in note

    c = _probed(_sliced_kv_step(), tmp_path / "many")
    assert c.dims["past"] == DimRange(min=0, opt=128, max=1024)
    assert c.dims["total"] == DimRange(min=1, opt=256, max=2048)
    assert "contradict" not in c.dim_origins["total"].note


def test_outputs_that_never_agree_with_their_declared_dims_leave_the_probe_as_it_was(
    tmp_path: Path,
) -> None:
    """An export that names a downsampled axis after its input's (y = x[:, ::2] declared
    [1, 'n']) never agrees with it at any size: the probe keeps what ran."""
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("Slice", ["x", "zero", "big", "one", "two"], ["y"])],
        "strided",
        [h.make_tensor_value_info("x", 1, [1, "n"])],
        [h.make_tensor_value_info("y", 1, [1, "n"])],
        [
            onnx.numpy_helper.from_array(np.asarray([v], np.int64), name)
            for name, v in (("zero", 0), ("big", 1 << 30), ("one", 1), ("two", 2))
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    c = _probed(model, tmp_path)
    assert c.dims["n"].opt == 224
    assert "contradict" not in c.dim_origins["n"].note


def test_dims_no_size_fits_fail_in_one_line_naming_each_and_its_set(tmp_path: Path) -> None:
    model = _reshaped(  # [1, d, 2] into [1, 47]: no d fits, not even the stated 47
        {"x": [1, "p2o.DynamicDimension.1", 2], "y": [1, "seq", 2]}, {"x": [1, 47], "y": [1, 47]}
    )
    with pytest.raises(ConfigError) as err:
        _probed(model, tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and err.value.exit_code == 2
    assert msg.startswith("m.onnx: no size the model accepts was found for the dims")
    assert (
        "'p2o.DynamicDimension.1' (input 'x' axis 1)" in msg and "'seq' (input 'y' axis 1)" in msg
    )
    assert """--set 'dims."p2o.DynamicDimension.1".opt=N' --set dims.seq.opt=N""" in msg
    assert "Reshape" in msg  # the last error the reference gave
    assert "and those the graph states (47)" in msg


def test_a_traced_size_the_graph_states_is_tried_where_no_usual_size_runs(
    tmp_path: Path,
) -> None:
    """TorchScript's export of nn.MultiheadAttention bakes the traced length into a view's
    shape, and the model then runs at that length only (7), none of the candidates: the
    default build stopped with 'no size the model accepts'. The sizes the graph's small
    integer constants state are tried next, and the contract says why its range is 7..7."""
    model = _reshaped({"x": [1, "T", 4]}, {"x": [1, 7, 2, 2]})
    c = _probed(model, tmp_path)
    assert c.dims["T"] == DimRange(min=7, opt=7, max=7)
    assert "one the graph states" in c.dim_origins["T"].note


def test_sizes_that_fold_into_the_batch_are_rejected_for_those_whose_outputs_agree(
    tmp_path: Path,
) -> None:
    """An export that reshapes by the length it traced (7) into [-1, 7] runs at every
    multiple of it and folds the rest into the batch: at the first size accepted (224) a
    batch of 1 came back as 32. The probe took 224, then found the model 'runs at batch 1
    only'. Sizes whose outputs contradict the batch they declare are now rejections: the
    length is 7..7 (the size the graph states) and the batch keeps its default range."""
    h = onnx.helper
    graph = h.make_graph(
        [
            h.make_node("Reshape", ["x", "shape"], ["rows"]),
            h.make_node("ReduceSum", ["rows", "axis"], ["y"], keepdims=0),
        ],
        "folded",
        [h.make_tensor_value_info("x", 1, ["B", "T"])],
        [h.make_tensor_value_info("y", 1, ["B"])],
        [
            onnx.numpy_helper.from_array(np.asarray([-1, 7], np.int64), "shape"),
            onnx.numpy_helper.from_array(np.asarray([1], np.int64), "axis"),
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    c = _probed(model, tmp_path)
    assert c.dims["T"] == DimRange(min=7, opt=7, max=7)
    note = c.dim_origins["T"].note
    assert "at T=224, the first sizes accepted, output 'y' came back with 32" in note
    assert "one the graph states" in note
    assert c.dims["B"] == DimRange(min=1, opt=1, max=64)


def test_configured_ranges_keep_opt_and_pull_in_ends_the_model_rejects(tmp_path: Path) -> None:
    model = _reshaped({"x": [1, "?"], "y": [1, "seq"]}, {"x": [1, 47], "y": [1, -1]})
    model, record = normalize_model(model, "m.onnx")
    given = {"x_d1": DimRange(opt=47), "seq": DimRange(min=3, opt=5, max=9)}
    contract = extract_contract(model, given, record["named_dims"])
    path = save_model(model, tmp_path / "norm")
    c = range_dims(path, contract, resolve_domains(contract, {}), "m.onnx")
    assert c.dims["x_d1"] == DimRange(min=47, opt=47, max=47)  # 23..94 around opt 47
    assert c.dim_origins["x_d1"].note == "config min 23 rejected; config max 94 rejected"
    assert c.dims["seq"] == given["seq"]
    assert c.dim_origins["seq"].note == "min and max accepted by the reference"
    assert {o.source for o in c.dim_origins.values()} == {"config"}


@pytest.mark.parametrize("batch", ["N", 2])
def test_a_model_onnx_runtime_cannot_load_is_an_input_error_naming_it(
    tmp_path: Path, batch: str | int
) -> None:
    """The reference runs on ONNX Runtime: a model it refuses (here a type clash the plain
    checker lets through) stops the build at once, exit 2, naming the user's file and the
    node, not the build's internal copy. Dynamic dims are probed on it (range_dims), static
    ones reach the reference node first: both say the same."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"], name="clash")],
        "clash",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor("c", TensorProto.INT64, [4], [1, 2, 3, 4])],
    )
    path = tmp_path / "clash.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    said = _refused(path, tmp_path)
    assert "clash.onnx: ONNX Runtime, which runs the reference" in said, said
    assert "(clash)" in said and "Load model from" not in said


def test_a_text_input_is_an_input_error_naming_the_file_and_what_to_do(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node(
                "LabelEncoder",
                ["s"],
                ["y"],
                domain="ai.onnx.ml",
                keys_strings=["a", "b"],
                values_floats=[1.0, 2.0],
            )
        ],
        "text",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    path = tmp_path / "text.onnx"
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    said = _refused(path, tmp_path)
    assert "text.onnx: graph input 's': element type STRING is not supported" in said, said
    assert "token ids, not text" in said


def _refused(path: Path, tmp_path: Path) -> str:
    """What `compile-pkg MODEL` says refusing `path`: exit 2, one message, nothing written."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "compiler.cli", str(path), "--targets", "cpu"]
        + ["-o", str(tmp_path / "pkg"), "--no-cache"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "pkg").exists()
    return " ".join(run.stderr.split())


def test_an_output_declared_otherwise_than_returned_is_declared_as_returned(
    tmp_path: Path,
) -> None:
    """ddddocr's recognizer declares its output [1, seqlen] and returns [steps, 1, 8210]: a
    Reshape to a computed shape, which ONNX shape inference cannot follow. Made small: x
    [1, W] reshaped to [W / 2, 1, 2], declared [1, seqlen]. The contract (and so a Triton
    config) said [1, seqlen]; now it says the returned rank, each dim that disagreed named."""
    h = onnx.helper
    nodes = [
        h.make_node("Shape", ["x"], ["s"]),
        h.make_node("Gather", ["s", "one"], ["w"], axis=0),
        h.make_node("Div", ["w", "two"], ["half"]),
        h.make_node("Concat", ["half", "one", "two"], ["shape"], axis=0),
        h.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    inits = [
        onnx.numpy_helper.from_array(np.array([v], np.int64), n)
        for n, v in (("one", 1), ("two", 2))
    ]
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", 1, [1, "W"])],
        [h.make_tensor_value_info("y", 1, [1, "seqlen"])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    model, record = normalize_model(model, "m.onnx")
    contract = extract_contract(model, {"W": DimRange(min=2, opt=16, max=64)}, record["named_dims"])
    path = save_model(model, tmp_path / "norm")
    domains = resolve_domains(contract, {})
    returned = returned_shapes(path, contract, domains, "m.onnx")
    assert returned == {"y": (8, 1, 2)}
    fixed, notes = as_returned(model, contract, returned)
    assert fixed.outputs[0].shape == ["y_d0", "y_d1", "y_d2"]
    assert notes == [
        "y: declared [1, 'seqlen'], returns [8, 1, 2] at the dims' opt sizes; "
        "now ['y_d0', 'y_d1', 'y_d2']"
    ]
    assert fixed.named_dims["y_d2"] == "output 'y' axis 2 (returned 2)"
    dims = model.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["y_d0", "y_d1", "y_d2"]
    save_model(model, tmp_path / "fixed")
    assert returned_shapes(tmp_path / "fixed" / "model.onnx", fixed, domains, "m.onnx") == {}
    # a model whose outputs are as declared is left alone
    mlp = tiny_mlp()
    mlp_contract = extract_contract(mlp)
    mlp_path = save_model(mlp, tmp_path / "mlp")
    assert returned_shapes(mlp_path, mlp_contract, resolve_domains(mlp_contract, {}), "m") == {}


def _graph(
    nodes: list, inputs: dict[str, list], outputs: dict[str, list], inits=()
) -> onnx.ModelProto:
    f = onnx.TensorProto.FLOAT
    graph = onnx.helper.make_graph(
        nodes,
        "g",
        [onnx.helper.make_tensor_value_info(n, f, s) for n, s in inputs.items()],
        [onnx.helper.make_tensor_value_info(n, f, s) for n, s in outputs.items()],
        list(inits),
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_a_floored_downsample_does_not_hide_the_step(tmp_path: Path) -> None:
    """Windows of 7 over features a stride-4 stem made: the model takes 224 to 227 (the
    stem floors), then 252. Taking 225 as step 1 stuck the range at 224..224 (and two such
    dims 'moved together', equal); the step must hold on both sides of opt: 28."""
    windowed = _graph(
        [
            onnx.helper.make_node("MaxPool", ["x"], ["f"], kernel_shape=[4], strides=[4]),
            onnx.helper.make_node("Reshape", ["f", "shape"], ["w"]),
            onnx.helper.make_node("ReduceMax", ["w"], ["y"], axes=[3], keepdims=0),
        ],
        {"x": ["N", 1, "H"]},
        {"y": ["N", 1, "windows"]},
        [onnx.numpy_helper.from_array(np.array([0, 0, -1, 7], np.int64), "shape")],
    )
    c = _probed(windowed, tmp_path)
    assert c.dims["H"] == DimRange(min=28, opt=224, max=1792, step=28), c.dims["H"]
    assert "step 28: 225 or 223 rejected, 196 and 252 accepted" in c.dim_origins["H"].note


def test_a_dim_that_takes_multiples_only_gets_its_step(tmp_path: Path) -> None:
    """A detector's feature pyramid takes multiples of 32 (ppocr_det: 481 failed in an Add
    deep inside, once served, where the contract said 64..3840); frames stacked by 4 take
    multiples of 4. The probe finds the step (opt + 1 rejected, opt + step accepted), walks
    the range on it, and a feed off it gets an error naming the dim and the sizes near it."""
    stacked = _graph(  # [N, T, 16] -> [N, T/4, 64]: T a multiple of 4
        [onnx.helper.make_node("Reshape", ["x", "shape"], ["y"])],
        {"x": ["N", "T", 16]},
        {"y": ["N", "T4", 64]},
        [onnx.numpy_helper.from_array(np.array([0, -1, 64], np.int64), "shape")],
    )
    c = _probed(stacked, tmp_path / "a")
    t = c.dims["T"]
    assert (t.step, t.opt % 4, t.min % 4, t.max % 4) == (4, 0, 0, 0), t
    assert (
        t.min == 4
        and f"step 4: {t.opt + 1} or {t.opt - 1} rejected, {t.opt - 4} and {t.opt + 4} accepted"
        in c.dim_origins["T"].note
    )
    assert t.takes(t.opt + 4) and not t.takes(t.opt + 2) and t.describe().endswith("step 4)")
    ok = {"x": np.zeros((1, 8, 16), np.float32)}
    assert c.validate_feeds(ok)["x"].shape == (1, 8, 16)
    with pytest.raises(ContractError, match=r"'T'\): size 10 is not one the model takes: .* "
                       r"multiples of 4 \(nearest: 8 or 12\)"):  # fmt: skip
        c.validate_feeds({"x": np.zeros((1, 10, 16), np.float32)})
    free = _probed(
        _graph([onnx.helper.make_node("Relu", ["x"], ["y"])], {"x": ["N", "T"]}, {"y": ["N", "T"]}),
        tmp_path / "b",
    )
    assert free.dims["T"].step == 1 and "step" not in free.dim_origins["T"].note
    with pytest.raises(ValueError, match="multiple of step 4"):
        DimRange(min=1, opt=8, max=16, step=4)


def test_dims_named_apart_that_must_be_equal_are_one_group(tmp_path: Path) -> None:
    """tf2onnx names each input's dims apart (unk__2, unk__4) where the model needs them
    equal; an LSTM state's batch ([2, S, 4], silero_vad's) follows the input's batch, and
    was ranged 1..1 beside a batch of 1..64 nobody could feed. Both are found, the contract
    says the group, and a feed that gives them two sizes gets an error naming both."""
    pair = _graph(  # x [N, A] * y [N, B]: A and B must agree (1 would broadcast)
        [onnx.helper.make_node("Mul", ["x", "y"], ["z"])],
        {"x": ["N", "A"], "y": ["N", "B"]},
        {"z": ["N", "A"]},
    )
    c = _probed(pair, tmp_path / "a")
    assert ["A", "B"] in c.equal_dims and c.dims["A"] == c.dims["B"]
    with pytest.raises(ContractError, match=r"dims 'A' 8 \(input 'x' axis 1\), 'B' 16 .* differ"):
        c.validate_feeds({"x": np.zeros((1, 8), np.float32), "y": np.zeros((1, 16), np.float32)})
    state = _graph(  # x [N, 4] beside h [2, S, 4] -> h[0] [S, 4]: concat needs S == N
        [
            onnx.helper.make_node("Gather", ["h", "zero"], ["h0"], axis=0),
            onnx.helper.make_node("Concat", ["x", "h0"], ["y"], axis=1),
        ],
        {"x": ["N", 4], "h": [2, "S", 4]},
        {"y": ["N", 8]},
        [onnx.numpy_helper.from_array(np.array(0, np.int64), "zero")],
    )
    c = _probed(state, tmp_path / "b")
    assert c.dims["N"] == c.dims["S"] == DimRange(min=1, opt=1, max=64)
    assert ["N", "S"] in c.equal_dims and "follows batch dim 'N'" in c.dim_origins["S"].note
    feeds = {"x": np.zeros((3, 4), np.float32), "h": np.zeros((2, 3, 4), np.float32)}
    assert set(c.validate_feeds(feeds)) == {"x", "h"}
    with pytest.raises(ContractError, match="differ"):
        c.validate_feeds({**feeds, "h": np.zeros((2, 1, 4), np.float32)})


def test_a_recurrent_state_s_batch_is_probed_at_the_batch_s(tmp_path: Path) -> None:
    """A streaming LSTM whose states come in as inputs ([1, hb, 16], [1, cb, 16]), their
    batch named apart from the input's: the search over CANDIDATES by rank sum had to reach
    1, the last, for both states at once, spent its 600 runs and stopped the default build
    ('no size the model accepts was found'). The states' batch dims are tried at the batch's
    opt first, and follow the batch."""
    rng = np.random.default_rng(0)
    w = [(rng.normal(size=s) * 0.3).astype(np.float32) for s in ((1, 64, 10), (1, 64, 16))]
    lstm = _graph(
        [
            onnx.helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
            onnx.helper.make_node(
                "LSTM", ["xt", "W", "R", "", "", "h0", "c0"], ["y", "h1", "c1"], hidden_size=16
            ),
        ],
        {"x": ["batch", "T", 10], "h0": [1, "hb", 16], "c0": [1, "cb", 16]},
        {"h1": [1, "hb", 16], "c1": [1, "cb", 16]},
        [onnx.numpy_helper.from_array(a, n) for a, n in zip(w, ("W", "R"), strict=True)],
    )
    c = _probed(lstm, tmp_path)
    assert c.dims["hb"] == c.dims["cb"] == c.dims["batch"] == DimRange(min=1, opt=1, max=64)
    assert ["batch", "cb", "hb"] in c.equal_dims
    assert c.dims["T"].opt == CANDIDATES[0]


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
def test_a_dilated_same_convolution_gets_explicit_pads(mode: str) -> None:
    """TorchScript writes nn.Conv1d(padding="same", dilation=3) as auto_pad SAME_* with
    dilations, which ONNX Runtime refuses at every size; at stride 1 normalize writes the same
    padding out (ONNX's reference implementation computes the source, ONNX Runtime the
    result, alike); a strided one, whose padding depends on the size, is left alone."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array(rng.normal(size=(2, 3, 4)).astype(np.float32), "w")

    def conv(**attrs: object) -> onnx.ModelProto:
        node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=mode, **attrs)
        return _graph([node], {"x": ["N", 3, "T"]}, {"y": ["N", 2, "T"]}, [w])

    source = conv(dilations=[3])
    x = rng.normal(size=(1, 3, 11)).astype(np.float32)
    want = ReferenceEvaluator(source).run(None, {"x": x})[0]
    with pytest.raises(Exception, match="Dilation not supported"):
        ort.InferenceSession(source.SerializeToString()).run(None, {"x": x})
    model, record = normalize_model(source, "m.onnx")
    assert record["same_pads_made_explicit"] == ["y"]
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert got.shape == want.shape and np.allclose(got, want, atol=1e-5)
    _, strided = normalize_model(conv(dilations=[3], strides=[2]), "m.onnx")
    assert "same_pads_made_explicit" not in strided
