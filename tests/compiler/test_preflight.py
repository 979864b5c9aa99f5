"""Bad models get exit 2 and one line naming the problem before any pass runs (issue 13,
item 7); a model keeping its weights in external data builds end to end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from compiler.cli import main
from compiler.pipeline.preflight import preflight_model
from compiler.serving.loader import load
from tests.compiler.helpers import build
from tests.models import save, tiny_mlp


def _external(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save_model(model, path, save_as_external_data=True, location="w.bin", size_threshold=0)
    return path


def _relocated(path: Path, location: str) -> Path:
    """The model at `path` with its first external tensor's location changed."""
    model = onnx.load(path, load_external_data=False)
    for t in model.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location":
                kv.value = location
                return save(model, path)
    raise AssertionError("no external tensor")


def _empty(d: Path) -> Path:
    (d / "m.onnx").write_bytes(b"")
    return d / "m.onnx"


def _garbage(d: Path) -> Path:
    (d / "m.onnx").write_bytes(b"\xff\xfenot a protobuf at all" * 10)
    return d / "m.onnx"


def _no_shape(d: Path) -> Path:
    m = tiny_mlp()
    m.graph.input[0].type.tensor_type.ClearField("shape")
    return save(m, d / "m.onnx")


def _unknown_domain(d: Path) -> Path:
    m = tiny_mlp()
    m.graph.node.append(helper.make_node("Frobnicate", ["y"], ["z"], domain="com.example.ops"))
    m.graph.output[0].name = "z"
    m.opset_import.append(helper.make_opsetid("com.example.ops", 1))
    return save(m, d / "m.onnx")


def _unconverted_op(d: Path) -> Path:
    """tf2onnx's leftover: a TensorFlow Lite op it could not convert, in the default domain
    (mediapipe's selfie segmentation: TFL_Convolution2DTransposeBias)."""
    m = tiny_mlp()
    m.graph.node.append(helper.make_node("TFL_Convolution2DTransposeBias", ["y"], ["z"], "seg"))
    m.graph.output[0].name = "z"
    return save(m, d / "m.onnx")


def _op_newer_than_opset(d: Path) -> Path:
    m = tiny_mlp()
    m.graph.node.append(helper.make_node("Gelu", ["y"], ["z"], "act"))  # opset 20
    m.graph.output[0].name = "z"
    return save(m, d / "m.onnx")


def _zero_dim(d: Path) -> Path:
    m = tiny_mlp()
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 0
    return save(m, d / "m.onnx")


def _missing_data(d: Path) -> Path:
    path = _external(tiny_mlp(), d / "m.onnx")
    (d / "w.bin").unlink()
    return path


def _escaping_data(d: Path) -> Path:
    return _relocated(_external(tiny_mlp(), d / "m.onnx"), "../w.bin")


def _absolute_data(d: Path) -> Path:
    return _relocated(_external(tiny_mlp(), d / "m.onnx"), "/etc/hostname")


def _truncated_data(d: Path) -> Path:
    path = _external(tiny_mlp(), d / "m.onnx")
    data = (d / "w.bin").read_bytes()
    (d / "w.bin").write_bytes(data[: len(data) // 2])
    return path


def _no_inputs(d: Path) -> Path:
    m = helper.make_model(
        helper.make_graph(
            [helper.make_node("Constant", [], ["y"], value_float=1.0)],
            "const",
            [],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        )
    )
    return save(m, d / "m.onnx")


def _zipmap_output(d: Path) -> Path:
    """skl2onnx's default classifier output: ZipMap's sequence of {class: probability}."""
    rows = helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(1, []))
    )
    m = tiny_mlp()
    m.graph.node.append(
        helper.make_node(
            "ZipMap", ["y"], ["probs"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2, 3]
        )
    )
    m.graph.output.append(helper.make_value_info("probs", rows))
    m.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    return save(m, d / "m.onnx")


BAD: list[tuple[str, Callable[[Path], Path], str]] = [
    ("empty file", _empty, "the file is empty"),
    ("not ONNX", _garbage, "not an ONNX model"),
    ("no shapes", _no_shape, "graph input 'x' has no shape"),
    ("unknown domain", _unknown_domain, "operator domain 'com.example.ops'"),
    (
        "unconverted op",
        _unconverted_op,
        "node 'seg' (TFL_Convolution2DTransposeBias) is not an ONNX operator",
    ),
    ("op newer than the opset", _op_newer_than_opset, "node 'act' (Gelu) came in opset 20"),
    ("0-sized dim", _zero_dim, "graph input 'x' axis 1 is 0-sized"),
    ("missing external data", _missing_data, "external data file w.bin is missing"),
    ("escaping external data", _escaping_data, "'../w.bin', outside the model's folder"),
    ("absolute external data", _absolute_data, "'/etc/hostname', outside the model's folder"),
    ("truncated external data", _truncated_data, "lie past its end"),
    ("no inputs", _no_inputs, "the graph has no inputs"),
    (
        "sequence output",
        _zipmap_output,
        "output 'probs' is a sequence, not a tensor (made by ZipMap",
    ),
]


@pytest.mark.parametrize(("case", "make", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_model_exits_2_with_one_line_before_any_work(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    make: Callable[[Path], Path],
    message: str,
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    model = make(src)
    cache = tmp_path / "cache"
    with pytest.raises(SystemExit) as done:
        main(
            [str(model), "--targets", "cpu", "-o", str(tmp_path / "out"), "--cache-dir", str(cache)]
        )
    err = capsys.readouterr().err.strip()
    print(f"{case}: exit {done.value.code}: {err}")
    assert done.value.code == 2
    assert message in " ".join(err.split()) and str(model) in " ".join(err.split())
    assert len(err.splitlines()) == 1 or err.count("error:") == 1
    assert not (tmp_path / "out").exists() and not cache.exists()  # no pass ran


def test_a_model_with_external_data_builds_end_to_end(tmp_path: Path) -> None:
    model = _external(tiny_mlp(), tmp_path / "m.onnx")
    facts = preflight_model(model)
    assert facts.external_files == ("w.bin",) and facts.external_bytes > 0
    build(model, tmp_path / "pkg", None, targets=("cpu",))
    with load(tmp_path / "pkg", target="cpu") as s:
        assert s.artifact == "cpu/ort-fp32"
