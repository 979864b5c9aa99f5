"""`compile-pkg verify` as a release gate, on a real tiny package (cpu and arm ONNX Runtime
artifacts, a gpu TensorRT artifact skipped at build for want of TensorRT): the package is never
rewritten, a build-time failure is not a new one, a tampered file or a slower artifact is named,
and the exit code says which."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from compiler.core.errors import PackageError
from compiler.core.host import probe_host
from compiler.core.latency import SpeedupInterval
from compiler.core.records import LatencyRecord, ParityRecord
from compiler.measure.verify import measured_on
from compiler.packaging.reverify import judge_latency, judge_parity, verify_package
from compiler.serving.manifest import document_records_digest, read_manifest
from compiler.serving.selection import rank
from compiler.serving.verify_records import default_records_path, read_verify_records
from tests.compiler.helpers import build
from tests.models import save, tiny_mlp

ROOT = Path(__file__).resolve().parents[2]
TRT = {"gpu": {"variants": {"trt-fp16": {"compile": {"backend": "tensorrt", "precision": "fp16"}}}}}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("gate")
    model = save(tiny_mlp(), tmp / "mlp.onnx")
    raw = {"targets": TRT, "latency": {"runs": 6, "warmup": 1, "max_seconds": 3}}
    return build(model, tmp / "pkg", None, targets=("cpu", "arm", "gpu"), raw=raw).package


@pytest.fixture
def pkg(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "pkg"))


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _edit_manifest(pkg: Path, edit) -> None:  # type: ignore[no-untyped-def]
    path = pkg / "manifest.json"
    doc = json.loads(path.read_text())
    edit(doc)
    doc["records_sha256"] = document_records_digest(doc)  # an edit of the records, owned
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "compiler.cli", *args], capture_output=True, text=True, env=env
    )


def test_verify_never_rewrites_the_package_and_passes_what_passed(pkg: Path) -> None:
    before = _digests(pkg)
    report = verify_package(pkg, measure_latency=False)
    assert _digests(pkg) == before
    verdicts = {c.id: c.verdict for c in report.artifacts}
    assert verdicts == {
        "cpu/ort-fp32": "ok",
        "arm/ort-fp32": "ok",  # cross-host on x86_64, as at build
        "gpu/trt-fp16": "not-checked",  # skipped at build: not a new failure
    }
    assert report.ok and report.regressions == []
    verify_package(pkg)  # a second run appends, with latency this time
    assert _digests(pkg) == before
    records = read_verify_records(default_records_path(pkg), report.core_sha256)
    assert len(records.measurements["cpu/ort-fp32"].parity) == 2
    latency = records.measurements["cpu/ort-fp32"].latency
    assert [r.source for r in latency] == ["verify"] and latency[0].speedup is not None
    assert latency[0].host_load is not None


def test_a_tampered_artifact_file_is_named_as_newly_failed(pkg: Path) -> None:
    model = next((pkg / read_manifest(pkg).artifact("cpu/ort-fp32").directory).glob("*.onnx"))
    model.write_bytes(model.read_bytes()[:-8] + b"tampered")
    report = verify_package(pkg, measure_latency=False)
    assert not report.ok and report.regressions == ["cpu/ort-fp32"]
    check = {c.id: c for c in report.artifacts}["cpu/ort-fp32"]
    assert check.verdict == "newly-failed" and "sha256" in check.files


def test_an_artifact_slower_than_recorded_is_a_named_regression(pkg: Path) -> None:
    def faster_at_build(doc: dict) -> None:  # type: ignore[type-arg]
        rec = doc["measurements"]["cpu/ort-fp32"]["latency"][-1]
        rec["speedup"] |= {"estimate": 50.0, "low": 45.0, "high": 55.0}

    _edit_manifest(pkg, faster_at_build)
    report = verify_package(pkg)
    check = {c.id: c for c in report.artifacts}["cpu/ort-fp32"]
    assert check.recorded_speedup is not None and check.recorded_speedup.low == 45.0
    assert check.latency is not None
    recorded = read_manifest(pkg).measured("cpu/ort-fp32").latency[-1]
    # other work on every core, now or when the build's record was taken (a second
    # measurement right after a build sees the build's load average)
    if check.latency.busy or check.latency.host_load is None or recorded.busy:
        assert check.verdict == "ok" and "latency not judged: the host was busy" in check.why
    else:
        assert report.regressions == ["cpu/ort-fp32"] and check.verdict == "regressed"
        assert "at build: slower beyond the intervals" in check.why


def test_update_records_into_the_manifest_without_changing_the_pick(pkg: Path) -> None:
    host = probe_host()
    picked = [c.id for c in rank(read_manifest(pkg), host)[0]]
    verify_package(pkg, update=True)
    m = read_manifest(pkg)
    # the build's record(s) (a second where the host ran slow: compiler/packaging/retime.py),
    # then this run's
    sources = [r.source for r in m.measured("cpu/ort-fp32").latency]
    assert sources[-1] == "verify" and set(sources[:-1]) == {"build"}
    assert [c.id for c in rank(m, host)[0]] == picked
    assert not default_records_path(pkg).exists()


def test_verify_records_of_another_build_are_refused(pkg: Path) -> None:
    verify_package(pkg, measure_latency=False)
    with pytest.raises(PackageError, match="another build of the package"):
        read_verify_records(default_records_path(pkg), "0" * 64)


def _parity(status: str) -> ParityRecord:
    return ParityRecord(status=status, mode="native", reason="" if status != "error" else "boom")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("recorded", "now", "verdict"),
    [
        ("passed", "passed", "ok"),
        ("failed", "passed", "improved"),
        ("failed", "failed", "known-failure"),
        ("error", "error", "known-failure"),
        ("passed", "failed", "newly-failed"),
        ("not-verified", "error", "newly-failed"),
        ("passed", "not-verified", "not-checked"),
    ],
)
def test_parity_is_judged_against_the_recorded_verdict(
    recorded: str, now: str, verdict: str
) -> None:
    assert judge_parity(recorded, _parity(now))[0] == verdict


def _lat(
    status: str = "measured", low: float = 1.0, high: float = 1.1, load: float = 0.0
) -> LatencyRecord:
    s = SpeedupInterval(estimate=(low + high) / 2, low=low, high=high, confidence=0.97, pairs=6)
    return LatencyRecord(
        host=measured_on(probe_host()).model_copy(update={"cpu_count": 2}),
        batch=1,
        input_shapes={},
        status=status,  # type: ignore[arg-type]
        speedup=s if status == "measured" else None,
        host_load=load,
    )


def test_latency_is_judged_by_intervals_and_a_crash_is_a_failure() -> None:
    assert judge_latency(_lat(low=2.0, high=2.2), _lat(low=1.9, high=2.1), 0.1)[0] == "ok"
    # below the recorded interval, but within the 10 % margin
    assert judge_latency(_lat(low=2.0, high=2.2), _lat(low=1.7, high=1.85), 0.1)[0] == "ok"
    assert judge_latency(_lat(low=2.0, high=2.2), _lat(low=1.5, high=1.7), 0.1)[0] == "regressed"
    assert judge_latency(None, _lat(low=0.1, high=0.2), 0.1)[0] == "ok"
    assert judge_latency(_lat(), _lat("crashed"), 0.1)[0] == "newly-failed"
    assert judge_latency(_lat("crashed"), _lat("crashed"), 0.1)[0] == "known-failure"
    # measured while other work kept both cores busy: no verdict on that interval
    now = _lat(low=1.5, high=1.7, load=3.5).model_copy(update={"source": "verify"})
    busy = judge_latency(_lat(low=2.0, high=2.2), now, 0.1)
    assert busy[0] == "ok" and "the host was busy (load average verify 3.5 on 2 CPUs)" in busy[1]


def test_cli_exit_codes_and_json(pkg: Path, tmp_path: Path) -> None:
    records = tmp_path / "records.json"
    ok = _cli("verify", str(pkg), "--no-latency", "--json", "--records", str(records))
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert (doc["command"], doc["schema_version"], doc["ok"]) == ("verify", 1, True)
    assert {a["id"]: a["verdict"] for a in doc["artifacts"]}["gpu/trt-fp16"] == "not-checked"
    assert doc["records"] == str(records) and records.is_file()
    model = next((pkg / read_manifest(pkg).artifact("arm/ort-fp32").directory).glob("*.onnx"))
    model.write_bytes(b"\0" + model.read_bytes()[1:])
    bad = _cli("verify", str(pkg), "--no-latency", "--records", str(records))
    assert bad.returncode == 1 and "arm/ort-fp32 newly-failed" in bad.stderr
    both = _cli("verify", str(pkg), "--records", str(records), "--update")
    assert both.returncode == 2 and "exclude each other" in both.stderr


def test_a_verdict_on_int8_that_may_saturate_here_says_whose_it_is() -> None:
    """u8s8 judged on an AVX2 host: the verdict is that class's, and the note says how a host
    it is meant for records its own; on VNNI, and for 7-bit weights anywhere, nothing."""
    from compiler.core.host import HostInfo, Requirements
    from compiler.core.isa import meant_for
    from compiler.measure.verify import _saturation_note
    from tests.core.test_isa import AVX2, VNNI

    def host(flags: list[str]) -> HostInfo:
        return HostInfo(arch="x86_64", cpu_model="described", cpu_count=2, isa=flags, os="Linux")

    def req(flavour: Literal["u8s8", "u8s8-rr"]) -> Requirements:
        classes = meant_for("x86_64", int8=flavour)
        return Requirements(arch="x86_64", runtime="onnxruntime", int8=flavour, meant_for=classes)

    note = _saturation_note(req("u8s8"), host(AVX2))
    assert note.startswith("u8s8 int8 may saturate on avx2 (no VNNI): this verdict is this class's")
    assert "(avx-vnni, avx512-vnni, avx512-bf16, amx) `compile-pkg verify --update`" in note
    assert _saturation_note(req("u8s8"), host(VNNI)) == ""
    assert _saturation_note(req("u8s8-rr"), host(AVX2)) == ""
