from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compiler.core.errors import ContractError, NoCompatibleArtifact
from compiler.core.host import probe_host
from compiler.serving.loader import load
from compiler.serving.manifest import read_manifest
from tests.compiler.helpers import build

RAW = {
    "targets": {
        "cpu": {
            "variants": {
                "fast": {"compile": {"backend": "onnxruntime"}},
                "basic": {
                    "compile": {"backend": "onnxruntime", "graph_optimization_level": "basic"}
                },
            }
        }
    }
}


@pytest.fixture
def pkg(mlp_path: Path, tmp_path: Path) -> Path:
    build(mlp_path, tmp_path / "pkg", None, targets=("cpu", "arm"), raw=RAW)
    return tmp_path / "pkg"


def test_picks_a_compatible_verified_artifact_and_says_why(pkg: Path) -> None:
    with load(pkg) as s:
        assert s.artifact in ("cpu/fast", "cpu/basic")
        assert "parity passed (native on x86_64)" in s.reason and "p50" in s.reason
        y = s.run({"x": np.ones((2, 8), np.float32)})["y"]
        assert y.shape == (2, 4)
        decisions = {d.artifact: str(d) for d in s.decisions}
        assert decisions["arm/ort-fp32"].startswith("excluded: incompatible: needs aarch64")


def test_order_is_the_measured_latency_unless_configured(pkg: Path) -> None:
    m = read_manifest(pkg)
    p50 = {a: m.measurements[a].latency[0].artifact.p50_ms for a in ("cpu/fast", "cpu/basic")}
    with load(pkg) as s:
        assert s.artifact == min(p50, key=p50.get)
    with load(pkg, order=["cpu/basic"]) as s:
        assert s.artifact == "cpu/basic"


def test_tampered_file_is_refused_and_the_next_candidate_loads(pkg: Path) -> None:
    with load(pkg, order=["cpu/basic", "cpu/fast"]) as s:
        assert s.artifact == "cpu/basic"
    model = pkg / "artifacts/cpu.basic/model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    with load(pkg, order=["cpu/basic", "cpu/fast"]) as s:
        assert s.artifact == "cpu/fast"
        assert "after 1 fallback" in s.reason
        verdict = {d.artifact: str(d) for d in s.decisions}["cpu/basic"]
        assert "does not match its sha256" in verdict


def test_missing_files_everywhere_is_a_clear_error(pkg: Path) -> None:
    for f in (pkg / "artifacts").rglob("model.onnx"):
        f.unlink()
    with pytest.raises(NoCompatibleArtifact, match=r"cpu/fast: failed to load: .*missing"):
        load(pkg)


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
