"""Guarded specializations of ONNX Runtime artifacts (targets/onnxruntime/specialize.py): the
model bound to the values the contract states for its If selectors, its Ifs folded; the runner
runs it only for calls that feed those values and the general model for every other call."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler.core.contract import Contract, ValueDomain
from compiler.core.settings import OnnxRuntimeSettings, settings_from_json, settings_to_json
from compiler.pipeline.domains import infer_domains
from compiler.pipeline.interface import extract_contract
from compiler.serving.manifest import runtime_files
from targets.base import BuildRequest
from targets.onnxruntime import backend, runtime
from targets.onnxruntime.backend import OnnxRuntimeBackend, OnnxRuntimeOptions
from targets.onnxruntime.specialize import MAX_SPECIALIZATIONS, bindings, count_ifs

pytest.importorskip("onnxscript")


def _branch(name: str, op: str, operand: float) -> onnx.GraphProto:
    c = helper.make_tensor(f"{name}_c", TensorProto.FLOAT, [], [operand])
    return helper.make_graph(
        [
            helper.make_node("Constant", [], [f"{name}_k"], value=c),
            helper.make_node(op, ["x", f"{name}_k"], [f"{name}_y"]),
        ],
        name,
        [],
        [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, ["N", 4])],
    )


def _selector_net(tested: int = 3) -> onnx.ModelProto:
    """y = x * 2 where mode == `tested`, else x + 1; z = Relu(y) (outside the If), as an
    exported model with a sample-rate or cache-branch input computes it."""
    k = helper.make_tensor("k", TensorProto.INT64, [], [tested])
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["k_out"], value=k),
            helper.make_node("Equal", ["mode", "k_out"], ["cond"]),
            helper.make_node(
                "If",
                ["cond"],
                ["y"],
                then_branch=_branch("then", "Mul", 2.0),
                else_branch=_branch("else", "Add", 1.0),
            ),
            helper.make_node("Relu", ["y"], ["z"]),
        ],
        "selector_net",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("mode", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _contract(model: onnx.ModelProto) -> Contract:
    """The contract as normalize makes it: domains read off the graph."""
    contract = extract_contract(model)
    found = infer_domains(model, contract.inputs)
    contract.inputs = [t.model_copy(update={"domain": found.get(t.name)}) for t in contract.inputs]
    return contract


def _build(
    model: onnx.ModelProto,
    tmp_path: Path,
    calibration: list[dict[str, np.ndarray]] | None = None,
    **options: bool,
) -> tuple[Path, OnnxRuntimeSettings, list[str], list[str]]:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    onnx.save(model, str(src / "model.onnx"))
    req = BuildRequest(
        target="cpu",
        variant="ort-fp32",
        precision="fp32",
        options=OnnxRuntimeOptions(**options),
        contract=_contract(model),
        workdir=tmp_path,
        calibration=lambda: list(calibration or []),
    )
    result = OnnxRuntimeBackend().build(src / "model.onnx", req, out)
    assert isinstance(result.runtime, OnnxRuntimeSettings)
    return out, result.runtime, result.files, result.notes


def _x() -> np.ndarray:
    return np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)


def test_the_selector_is_bound_and_its_if_folded(tmp_path: Path) -> None:
    out, settings, files, notes = _build(_selector_net(), tmp_path)
    (spec,) = settings.specializations
    assert (spec.inputs, spec.values, spec.folded) == (("mode",), (3,), 1)
    assert spec.model in files and (out / spec.model).is_file()
    folded = onnx.load(str(out / spec.model))
    assert count_ifs(folded) == 0
    assert [i.name for i in folded.graph.input] == ["x"]
    assert count_ifs(onnx.load(str(out / settings.model))) == 1  # the general model as it was
    assert notes == ["specialized for mode == 3 (1 If folded): other values run the general graph"]
    assert runtime_files(settings) == ["model.onnx", spec.model]


def test_the_runner_guards_each_call(tmp_path: Path) -> None:
    out, settings, _, _ = _build(_selector_net(), tmp_path)
    artifact = runtime.load(out, settings, ["z"])
    assert "mode == 3" in str(artifact.describe()["specialized"])
    general = runtime.session(out / settings.model, threads=1)
    x = _x()
    for mode, expected in ((3, np.maximum(x * 2, 0)), (5, np.maximum(x + 1, 0))):
        feeds = {"x": x, "mode": np.array(mode, dtype=np.int64)}
        got = artifact.run(feeds)["z"]
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(got, general.run(["z"], feeds)[0])
    assert artifact.general_calls == 1  # mode 5 only
    artifact.run({"x": x, "mode": np.array([3], dtype=np.int64)})  # one element, other rank
    assert artifact.general_calls == 1


def test_no_specialization_where_the_binding_folds_nothing(tmp_path: Path) -> None:
    """The If tests `x`'s sum, not the bound input: the binding folds nothing."""
    model = _selector_net()
    graph = model.graph
    graph.node[1].CopyFrom(helper.make_node("Equal", ["mode", "k_out"], ["unused"]))
    graph.node.insert(1, helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0))
    graph.node.insert(2, helper.make_node("Greater", ["s", "zero"], ["cond"]))
    graph.node.insert(0, helper.make_node("Constant", [], ["zero"], value_float=0.0))
    contract = _contract(model)
    mode = next(t for t in contract.inputs if t.name == "mode")
    assert mode.domain is not None and mode.domain.values == [3]
    out, settings, files, notes = _build(model, tmp_path)
    assert settings.specializations == () and files == ["model.onnx"]
    assert notes == ["not specialized for mode == 3: binding mode == 3 folds no If"]


def test_the_option_turns_it_off(tmp_path: Path) -> None:
    _, settings, files, notes = _build(_selector_net(), tmp_path, specialize=False)
    assert settings.specializations == () and files == ["model.onnx"] and notes == []


def test_settings_keep_their_specializations_through_json(tmp_path: Path) -> None:
    _, settings, _, _ = _build(_selector_net(), tmp_path)
    doc = json.loads(json.dumps(settings_to_json(settings)))
    assert settings_from_json(doc) == settings


def _flag_contract(flags: int, values: list[int | float], dtype: str = "int64") -> Contract:
    contract = extract_contract(_selector_net())
    x = contract.inputs[0]
    specs = [
        x.model_copy(
            update={
                "name": f"f{i}",
                "dtype": dtype,
                "shape": [],
                "domain": ValueDomain(values=values),
            }
        )
        for i in range(flags)
    ]
    contract.inputs = [x, *specs]
    return contract


def test_bindings_are_every_combination_up_to_the_cap() -> None:
    two = bindings(_flag_contract(2, [0, 1]))
    assert [b.values for b in two] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(b.inputs == ("f0", "f1") for b in two)
    assert 2**3 > MAX_SPECIALIZATIONS and bindings(_flag_contract(3, [0, 1])) == []
    assert bindings(_flag_contract(1, [0, 1, 2])) == []  # more values than a selector has
    assert bindings(_flag_contract(1, [0.5], dtype="float32")) == []  # not a selector's dtype


def _feeds(mode: int) -> list[dict[str, np.ndarray]]:
    return [{"x": _x() + i, "mode": np.array(mode, dtype=np.int64)} for i in range(3)]


def test_a_specialization_that_matches_the_general_model_is_kept(tmp_path: Path) -> None:
    """Calibration feeds with another mode are compared with the bound value set."""
    _, settings, _, _ = _build(_selector_net(), tmp_path, calibration=_feeds(7))
    assert [s.values for s in settings.specializations] == [(3,)]


def test_a_specialization_that_computes_otherwise_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folding that took the wrong branch (x + 1 where mode == 3 means x * 2) is caught by
    the build's comparison with the general model, and the general model serves alone."""

    def wrong_branch(model_path: Path, binding: object, out_path: Path) -> tuple[int, str]:
        graph = helper.make_graph(
            [
                helper.make_node("Constant", [], ["one"], value_float=1.0),
                helper.make_node("Add", ["x", "one"], ["y"]),
                helper.make_node("Relu", ["y"], ["z"]),
            ],
            "wrong",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
            [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])],
        )
        wrong = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        wrong.ir_version = 8
        onnx.save(wrong, str(out_path))
        return 1, ""

    monkeypatch.setattr(backend, "specialize", wrong_branch)
    out, settings, files, notes = _build(_selector_net(), tmp_path, calibration=_feeds(3))
    assert settings.specializations == () and files == ["model.onnx"]
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]
    (note,) = notes
    assert note.startswith("not specialized for mode == 3: output 'z' differs from the general")
