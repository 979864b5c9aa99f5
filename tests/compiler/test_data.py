"""Generated sample and calibration data: drawn from each input's value domain, checked on
the reference before any compile; which sets were generated decides lossy verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.core.contract import Contract, DimRange, TensorSpec, ValueDomain
from compiler.core.errors import ConfigError
from compiler.core.feeds import read_feeds_npz
from compiler.core.records import DataOutput
from compiler.pipeline.data import (
    InputDomain,
    generate_feeds,
    generated_data_notice,
    resolve_domains,
)
from compiler.pipeline.interface import extract_contract
from compiler.pipeline.probe import check_generated
from tests.compiler.helpers import build
from tests.models import save

# --------------------------------------------------------------------------- generated data


def test_generated_feeds_draw_from_each_domain_and_keep_scalars_scalar() -> None:
    c = Contract(
        inputs=[
            TensorSpec(name="x", dtype="float32", shape=["n", 3]),
            TensorSpec(name="tt", dtype="int64", shape=["n", 3]),
            TensorSpec(name="sr", dtype="int64", shape=[]),
            TensorSpec(name="m", dtype="bool", shape=["n", 3]),
        ],
        outputs=[],
        dims={"n": DimRange(opt=50)},
    )
    domains = {
        "x": ValueDomain(low=-2.0, high=-1.0),
        "tt": ValueDomain(low=0, high=1),
        "sr": ValueDomain(values=[16000]),
        "m": ValueDomain(low=0, high=1),
    }
    feeds = generate_feeds(c, 4, 0, domains)
    assert feeds[0]["sr"].shape == () and feeds[0]["sr"].dtype == np.int64
    assert {int(f["sr"]) for f in feeds} == {16000}
    tt = np.concatenate([f["tt"] for f in feeds])
    assert set(np.unique(tt)) == {0, 1}  # integers include `high`
    x = np.concatenate([f["x"] for f in feeds])
    assert x.min() >= -2.0 and x.max() < -1.0
    assert feeds[0]["m"].dtype == np.bool_
    assert _same(feeds, generate_feeds(c, 4, 0, domains))  # a fixed seed: the same every run


def test_uint8_inputs_span_their_range_by_default() -> None:
    """A uint8 input is an image's pixels (tf2onnx's detectors take uint8 NHWC) or a file's
    bytes: 0..9 drew near-black images; the other integers keep 0..9 (ids, lengths)."""
    c = Contract(
        inputs=[
            TensorSpec(name="image", dtype="uint8", shape=["n", 8, 8, 3]),
            TensorSpec(name="ids", dtype="int64", shape=["n", 3]),
        ],
        outputs=[],
        dims={"n": DimRange(opt=4)},
    )
    feeds = generate_feeds(c, 2, 0, resolve_domains(c, {}))
    pixels = np.concatenate([f["image"].ravel() for f in feeds])
    assert pixels.dtype == np.uint8 and pixels.min() < 32 and pixels.max() > 224
    assert max(int(f["ids"].max()) for f in feeds) <= 9


def _same(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> bool:
    return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)


def test_config_domain_replaces_the_graphs_and_names_unknown_inputs() -> None:
    graph = ValueDomain(low=0, high=1, source="indices into Gather")
    c = Contract(inputs=[TensorSpec(name="tt", dtype="int64", shape=[2], domain=graph)], outputs=[])
    assert resolve_domains(c, {})["tt"] == graph
    mine = resolve_domains(c, {"tt": InputDomain(values=[1])})["tt"]
    assert mine.values == [1] and mine.source == "config"
    high_only = resolve_domains(c, {"tt": InputDomain(high=5)})["tt"]
    assert (high_only.low, high_only.high) == (0, 5)  # the other bound: the dtype's default
    with pytest.raises(ConfigError, match=r"inputs:\) for \['nope'\], which the model does not"):
        resolve_domains(c, {"nope": InputDomain(values=[1])})
    with pytest.raises(ValueError, match="values, or low/high, not both"):
        InputDomain(values=[1], low=0)
    with pytest.raises(ConfigError, match="inputs.tt: Value error, low 8000 is above high 9"):
        resolve_domains(c, {"tt": InputDomain(low=8000)})


def _gather_via_add() -> onnx.ModelProto:
    """idx + 0 selects rows of a 2-row table: the graph states no domain the inference reads."""
    table = numpy_helper.from_array(np.ones((2, 3), np.float32), "table")
    zero = numpy_helper.from_array(np.asarray(0, np.int64), "zero")
    nodes = [
        helper.make_node("Add", ["idx", "zero"], ["i"]),
        helper.make_node("Gather", ["table", "i"], ["g"]),
        helper.make_node("ReduceSum", ["g"], ["y"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("idx", TensorProto.INT64, [4]),
            helper.make_tensor_value_info("f", TensorProto.FLOAT, [4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        [table, zero],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_generated_data_the_model_cannot_use_fails_in_one_line_naming_the_input(
    tmp_path: Path,
) -> None:
    m = _gather_via_add()
    c = extract_contract(m)
    path = save(m, tmp_path / "m.onnx")
    domains = resolve_domains(c, {})
    with pytest.raises(ConfigError) as err:
        check_generated(path, c, generate_feeds(c, 4, 0, domains), domains, "m.onnx")
    msg = str(err.value)
    assert "\n" not in msg and err.value.exit_code == 2
    assert msg.startswith("m.onnx: generated sample 0 fails (")
    assert "'idx' (0..9, default for int64)" in msg and "'f'" not in msg  # the culprit only
    assert "--set 'inputs.idx.values=[0,1]'" in msg and "--sample-data DIR" in msg
    fixed = resolve_domains(c, {"idx": InputDomain(values=[0, 1])})
    check_generated(path, c, generate_feeds(c, 4, 0, fixed), fixed, "m.onnx")


def test_generated_data_giving_nan_is_refused(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    m = helper.make_model(
        helper.make_graph(
            [helper.make_node("Log", ["x"], ["l"]), helper.make_node("Sqrt", ["l"], ["y"])],
            "g",
            [x],
            [y],
        )
    )
    c = extract_contract(m)
    domains = resolve_domains(c, {})
    with pytest.raises(ConfigError, match=r"gives NaN in outputs \['y'\].*'x' \(0.0..1.0"):
        check_generated(
            save(m, tmp_path / "m.onnx"), c, generate_feeds(c, 2, 0, domains), domains, "m"
        )


# --------------------------------------------------------------------------- the verdict fact


def _out(samples: str, calibration: str, n: int = 8) -> DataOutput:
    return DataOutput(
        samples=n,
        samples_source=samples,  # type: ignore[arg-type]
        calibration=16,
        calibration_source=calibration,  # type: ignore[arg-type]
        samples_digest="",
    )


def test_which_sets_were_generated_decides_lossy_verdicts() -> None:
    both = _out("generated", "generated")
    assert both.generated == ("samples", "calibration")
    assert both.judged_on_generated(lossy=True, calibrated=False)
    assert not both.judged_on_generated(lossy=False, calibrated=True)  # fp32: parity holds
    cal_only = _out("user", "generated", n=1)
    assert cal_only.generated == ("calibration",)
    assert cal_only.judged_on_generated(lossy=True, calibrated=True)
    assert not cal_only.judged_on_generated(lossy=True, calibrated=False)  # e.g. fp16
    real = _out("user", "user")
    assert real.generated == () and not real.judged_on_generated(lossy=True, calibrated=True)


def test_the_notice_says_what_was_generated_and_the_flag_that_fixes_it() -> None:
    assert generated_data_notice(_out("user", "user")) is None
    both = generated_data_notice(_out("generated", "generated")) or ""
    assert both.startswith("no real data given: int8 and other lossy artifacts were calibrated")
    assert "'unverified: generated data'" in both and "--sample-data DIR" in both
    assert "--data-loader module:function" in both
    cal = generated_data_notice(_out("user", "generated", n=1)) or ""
    assert "held 1 feed(s), too few to split" in cal and "--calibration-data DIR" in cal


# --------------------------------------------------------------------------- through a build


def test_a_new_value_domain_reruns_data_not_the_compiles(tmp_path: Path, mlp_path: Path) -> None:
    first = build(mlp_path, tmp_path / "a", tmp_path / "cache", ("cpu",))
    second = build(
        mlp_path, tmp_path / "b", tmp_path / "cache", ("cpu",), overrides=["inputs.x.high=2"]
    )
    assert first.results["data"].status == "ran" and second.results["data"].status == "ran"
    assert second.results["normalize"].status == "ran"  # probing reads the domains
    assert second.results["normalize"].digest == first.results["normalize"].digest
    compiles = [n for n in second.results if n.endswith(":compile")]
    assert compiles and all(second.results[n].status == "cached" for n in compiles)


def _meaningful(sr_shape: list[int]) -> onnx.ModelProto:
    """What stopped real models, in one graph: audio of a length the model fixes (48, named
    '?'), a token-type input indexing a 2-row table, and `If sr == 16000` (the else branch
    cannot run)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(2, 48)).astype(np.float32), "types"),
        numpy_helper.from_array(np.asarray([-1, 48], np.int64), "frames"),
        numpy_helper.from_array(np.asarray([-1, 96], np.int64), "wrong"),
        numpy_helper.from_array(np.asarray(16000, np.int64), "rate"),
        numpy_helper.from_array(np.asarray([1], np.int64), "one"),
    ]
    out = helper.make_tensor_value_info("r", TensorProto.FLOAT, None)
    then = helper.make_graph([helper.make_node("Identity", ["s"], ["r"])], "then", [], [out])
    other = helper.make_graph(
        [helper.make_node("Reshape", ["s", "wrong"], ["r"])], "else", [], [out]
    )
    nodes = [
        helper.make_node("Reshape", ["audio", "frames"], ["a"]),
        helper.make_node("Gather", ["types", "tt"], ["t"]),
        helper.make_node("Unsqueeze", ["a", "one"], ["au"]),
        helper.make_node("Add", ["au", "t"], ["s"]),
        helper.make_node("Equal", ["sr", "rate"], ["is16k"]),
        helper.make_node("If", ["is16k"], ["y"], then_branch=then, else_branch=other),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "?"]),
            helper.make_tensor_value_info("tt", TensorProto.INT64, ["batch", 4]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, sr_shape),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 48])],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_a_model_with_meaningful_inputs_packages_with_no_config(tmp_path: Path) -> None:
    model = save(_meaningful([1]), tmp_path / "m.onnx")
    out = build(model, tmp_path / "pkg", tmp_path / "cache", ("cpu",))
    c = out.manifest.contract
    assert c.inputs[0].shape == ["batch", "audio_d1"]
    assert c.dims["audio_d1"] == DimRange(min=48, opt=48, max=48)
    assert c.dim_origins["audio_d1"].source == "probed"
    assert (c.inputs[1].domain and (c.inputs[1].domain.low, c.inputs[1].domain.high)) == (0, 1)
    assert c.inputs[2].domain and c.inputs[2].domain.values == [16000]
    assert out.manifest.measurements["cpu/ort-fp32"].parity[0].status == "passed"


def test_a_scalar_input_reaches_the_package_as_a_scalar(tmp_path: Path) -> None:
    model = save(_meaningful([]), tmp_path / "m.onnx")
    out = build(model, tmp_path / "pkg", tmp_path / "cache", ("cpu",))
    assert out.manifest.contract.inputs[2].shape == []
    inputs = read_feeds_npz(tmp_path / "pkg" / "reference" / "inputs.npz")
    assert all(f["sr"].shape == () for f in inputs)
    assert out.manifest.measurements["cpu/ort-fp32"].parity[0].status == "passed"
