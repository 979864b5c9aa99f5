"""The serving API (issue 14, item 5): picks that say why, steering by target, backend,
precision and ids, errors that name what cannot be met, a session that describes itself and
refuses use after close, packed packages, and dim ranges only where the config set them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from compiler.core.errors import CompilePkgError, ConfigError, ContractError, NoCompatibleArtifact
from compiler.core.host import probe_host
from compiler.packaging.write import pack
from compiler.serving.loader import load
from tests.compiler.helpers import build

X = {"x": np.ones((2, 8), np.float32)}


def test_picks_a_compatible_verified_artifact_and_says_why(pkg: Path) -> None:
    with load(pkg, target="cpu") as s:  # an artifact, not the reference
        assert s.artifact in ("cpu/fast", "cpu/basic")
        assert "; parity passed (native on x86_64)" in s.reason
        assert s.run(X)["y"].shape == (2, 4)
        decisions = {d.artifact: str(d) for d in s.decisions}
        assert decisions["arm/ort-fp32"].startswith("excluded: incompatible: needs aarch64")


def test_required_ids_are_the_only_candidates_and_the_reason_says_so(pkg: Path) -> None:
    with load(pkg, require=["cpu/basic"]) as s:
        assert s.artifact == "cpu/basic"
        assert s.reason.startswith("required by the caller (require=['cpu/basic'], choice 1 of 1)")
        assert {d.artifact: d.outcome for d in s.decisions}.get("cpu/fast") == "excluded"


def test_a_required_artifact_that_cannot_run_here_raises_with_its_reason(pkg: Path) -> None:
    with pytest.raises(
        NoCompatibleArtifact, match=r"arm/ort-fp32: excluded: incompatible: needs aarch64"
    ):
        load(pkg, require=["arm/ort-fp32"])


@pytest.mark.parametrize(
    ("given", "hint"),
    [("cpu.fast", "did you mean 'cpu/fast'"), ("gpu/trt-fp16", "ids are <target>/<variant>")],
)
def test_an_id_the_package_lacks_is_an_error_never_ignored(
    pkg: Path, given: str, hint: str
) -> None:
    for kw in ({"require": [given]}, {"order": [given]}):
        with pytest.raises(ConfigError, match=hint):
            load(pkg, **kw)  # type: ignore[arg-type]


def test_an_order_entry_that_cannot_be_used_is_said_and_recorded(
    pkg: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "compile_pkg.loader"):
        with load(pkg, order=["arm/ort-fp32", "cpu/basic"]) as s:
            assert s.artifact == "cpu/basic"
            assert "the caller's order=['arm/ort-fp32', 'cpu/basic'] puts it at 2" in s.reason
    assert "order: arm/ort-fp32 could not be used: excluded: incompatible" in caplog.text


def test_target_backend_and_precision_steer_the_pick(pkg: Path) -> None:
    with load(pkg, target="cpu", backend="onnxruntime", precision="fp32") as s:
        assert s.artifact.startswith("cpu/")
        assert "the caller asked for target=cpu, backend=onnxruntime, precision=fp32" in s.reason
    with pytest.raises(NoCompatibleArtifact, match=r"backend='openvino': no artifact .* has it"):
        load(pkg, backend="openvino")
    with pytest.raises(NoCompatibleArtifact, match=r"request \(target=arm\) cannot be met"):
        load(pkg, target="arm")


def test_a_closed_session_says_so(pkg: Path) -> None:
    s = load(pkg)
    copies = [c.root for c in s.copies]
    assert copies and all(c.is_dir() for c in copies)
    s.close()
    assert not any(c.exists() for c in copies)  # the private verified copy is gone
    with pytest.raises(CompilePkgError, match="was closed; call load\\(\\) again"):
        s.run(X)
    s.close()  # twice is fine


def test_describe_is_json_for_logs_and_metrics(pkg: Path) -> None:
    with load(pkg, target="cpu") as s:
        doc = json.loads(json.dumps(s.describe()))
    assert doc["artifact"] == s.artifact and doc["backend"] == "onnxruntime"
    assert doc["precision"] == "fp32" and doc["target"] == "cpu"
    assert doc["runner"]["runtime"].startswith("onnxruntime") and doc["closed"] is False
    assert doc["core_sha256"] == s.manifest.core_sha256
    assert {d["outcome"] for d in doc["decisions"]} >= {"excluded", "picked"}


def test_a_packed_package_loads_from_a_private_extraction(pkg: Path, tmp_path: Path) -> None:
    archive = pack(pkg, tmp_path / "pkg.tar.gz")
    with load(archive) as s:
        unpacked = s.unpacked
        assert unpacked is not None and unpacked.is_dir()
        assert s.run(X)["y"].shape == (2, 4)
    assert not unpacked.exists()


def test_dim_ranges_only_where_the_config_set_them(mlp_path: Path, tmp_path: Path) -> None:
    build(mlp_path, tmp_path / "free", None, targets=("cpu",))
    with load(tmp_path / "free") as s:  # batch got a default range at build time only
        assert s.manifest.contract.dims["batch"].max == 64 and s.contract.dims == {}
        assert s.run({"x": np.ones((65, 8), np.float32)})["y"].shape == (65, 4)
    dims = {"dims": {"batch": {"min": 1, "opt": 1, "max": 8}}}
    build(mlp_path, tmp_path / "set", None, targets=("cpu",), raw=dims)
    with load(tmp_path / "set") as s:
        assert s.contract.dims["batch"].max == 8
        with pytest.raises(ContractError, match=r"outside the allowed range \[1, 8\]"):
            s.run({"x": np.ones((9, 8), np.float32)})


def test_inputs_are_validated_against_the_contract(pkg: Path) -> None:
    with load(pkg) as s, pytest.raises(ContractError, match="dtype int64"):
        s.run({"x": np.ones((1, 8), np.int64)})


def test_arm_host_picks_the_arm_artifact_only_with_its_runtime(pkg: Path) -> None:
    arm = probe_host().model_copy(update={"arch": "aarch64", "isa": ["asimd"]})
    # parity of the arm artifact was a cross-host check: it counts as verified, labelled so
    with load(pkg, host=arm) as s:
        assert s.artifact == "arm/ort-fp32" and "cross-host on x86_64" in s.reason
    bare = arm.model_copy(update={"runtimes": {}})
    with pytest.raises(NoCompatibleArtifact, match="runtime 'onnxruntime' is not importable"):
        load(pkg, host=bare)


def test_the_reference_is_served_where_no_artifact_beats_it_and_says_so(
    pkg: Path, tmp_path: Path
) -> None:
    """The package's own fp32 model is a candidate (serving/selection.py): required here,
    it loads from a verified copy of its model alone, runs as the reference did, and the
    session describes it; a target filter leaves it out."""
    work = tmp_path / "private"
    work.mkdir()
    with load(pkg, require=["reference"], workdir=work) as s:
        assert s.artifact == "reference" and "1.00x by definition" in s.reason
        out = s.run(X)["y"]
        doc = s.describe()
        copied = sorted(p.name for p in work.rglob("*") if p.is_file())
    assert doc["backend"] == "onnxruntime" and doc["precision"] == "fp32" and not doc["target"]
    assert copied == ["model.onnx"]  # not the samples
    with load(pkg, require=["cpu/basic"]) as a:
        np.testing.assert_allclose(a.run(X)["y"], out, rtol=1e-4, atol=1e-5)
    with load(pkg, target="cpu") as s:
        assert s.artifact != "reference"
        assert "not requested (target='cpu'" in str(
            {d.artifact: d for d in s.decisions}["reference"]
        )


def test_a_probed_step_and_equal_dims_are_enforced_where_probed_ranges_are_not(
    tmp_path: Path,
) -> None:
    """A probed range is only what was tried, so serving leaves it to the model; a step and
    dims that must be equal are sizes the reference was seen to reject (ppocr_det off its 32
    failed deep in an Add), so a feed off them gets the contract's error, naming the dim."""
    import onnx

    f = onnx.TensorProto.FLOAT
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("Reshape", ["x", "shape"], ["y"]),  # T a multiple of 4
            onnx.helper.make_node("Mul", ["a", "b"], ["z"]),  # A and B equal
        ],
        "g",
        [
            onnx.helper.make_tensor_value_info("x", f, ["N", "T", 16]),
            onnx.helper.make_tensor_value_info("a", f, ["N", "A"]),
            onnx.helper.make_tensor_value_info("b", f, ["N", "B"]),
        ],
        [
            onnx.helper.make_tensor_value_info("y", f, ["N", "T4", 64]),
            onnx.helper.make_tensor_value_info("z", f, ["N", "A"]),
        ],
        [onnx.numpy_helper.from_array(np.array([0, -1, 64], np.int64), "shape")],
    )
    src = tmp_path / "m.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), src)
    build(src, tmp_path / "pkg", None, targets=("cpu",))

    def feeds(t: int, a: int, b: int) -> dict[str, np.ndarray]:
        return {
            "x": np.ones((1, t, 16), np.float32),
            "a": np.ones((1, a), np.float32),
            "b": np.ones((1, b), np.float32),
        }

    with load(tmp_path / "pkg") as s:
        assert s.manifest.contract.dims["T"].step == 4
        assert ["A", "B"] in s.contract.equal_dims
        far = s.manifest.contract.dims["T"].max * 2  # beyond the probed range: served
        assert s.run(feeds(far, 8, 8))["y"].shape == (1, far // 4, 64)
        with pytest.raises(ContractError, match=r"size 10 is not one .* \(nearest: 8 or 12\)"):
            s.run(feeds(10, 8, 8))
        with pytest.raises(ContractError, match=r"'A' 8 .*'B' 9 .* differ"):
            s.run(feeds(12, 8, 9))
