"""`compile-pkg verify PKG --gpu-record FILE`: a `scripts/gpu_verify.py` run, taken where the
project cannot be installed (a GPU host without TVM's compiler or pydantic), becomes the
package's verify records, judged against the package's verdicts, and serving ranks by it.

A real tiny package with a TVM CPU artifact stands in for a gpu one (the script's `--target
cpu`): the record, the import and the ranking are the same code for both."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.core.errors import ConfigError, PackageError
from compiler.core.host import probe_host
from compiler.packaging.reverify import import_gpu_records
from compiler.serving.manifest import read_manifest
from compiler.serving.selection import rank
from compiler.serving.verify_records import default_records_path, read_verify_records
from targets.tvm.runtime_pack import assemble_runtime
from tests.compiler.helpers import build
from tests.models import save, tiny_mlp

pytest.importorskip("tvm")

ROOT = Path(__file__).resolve().parents[2]
TVM = {"cpu": {"variants": {"tvm-fp32": {"compile": {"backend": "tvm"}}}}}
ID = "cpu/tvm-fp32"


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(package, the script's record of its TVM artifact), made once."""
    tmp = tmp_path_factory.mktemp("gpurec")
    model = save(tiny_mlp(), tmp / "mlp.onnx")
    pkg = build(model, tmp / "pkg", None, targets=("cpu",), raw={"targets": TVM}).package
    runtime = assemble_runtime(tmp / "tvm_runtime")
    out = tmp / "record.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "gpu_verify.py"), "verify", str(pkg),
           "--target", "cpu", "--tvm-runtime", str(runtime), "--out", str(out),
           "--runs", "5", "--warmup", "1"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TVM_LIBRARY_PATH")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    return pkg, out


@pytest.fixture
def pkg(record: tuple[Path, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(record[0], tmp_path / "pkg"))


def _edited(src: Path, dst: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    doc = json.loads(src.read_text())
    edit(doc)
    dst.write_text(json.dumps(doc))
    return dst


def test_a_passing_record_is_recorded_and_ranked_by(pkg: Path, record: tuple[Path, Path]) -> None:
    report = import_gpu_records(pkg, [record[1]])
    (check,) = report.artifacts
    assert report.ok and check.id == ID and check.verdict == "ok"
    assert check.recorded_parity == "passed"  # the build verified its CPU artifact itself
    logged = read_verify_records(default_records_path(pkg), report.core_sha256)
    parity = logged.measurements[ID].parity[-1]
    assert parity.status == "passed" and parity.mode == "native" and parity.samples > 0
    assert parity.note.startswith("scripts/gpu_verify.py on x86_64")
    assert parity.host is not None and parity.host.isa == probe_host().isa  # flags kept as read
    latency = logged.measurements[ID].latency[-1]
    assert latency.source == "verify" and latency.speedup is not None
    assert latency.speedup.pairs == len(latency.speedup.ratios) >= 6
    ranked, _ = rank(
        read_manifest(pkg),
        probe_host(),
        use_verify_records=True,
        verify_records=logged.measurements,
    )
    mine = next(c for c in ranked if c.id == ID)
    assert mine.latency_source == "verify" and mine.speedup == latency.speedup


def test_a_failed_record_is_a_new_failure_and_is_not_served(
    pkg: Path, record: tuple[Path, Path], tmp_path: Path
) -> None:
    def fail(doc: dict) -> None:  # type: ignore[type-arg]
        row = doc["artifacts"][0]
        row["status"] = "failed"
        for out in row["parity"].values():
            out["passed"], out["failures"] = False, ["cosine 0.024 < 0.99"]

    report = import_gpu_records(pkg, [_edited(record[1], tmp_path / "failed.json", fail)])
    (check,) = report.artifacts
    assert not report.ok and report.regressions == [ID] and check.verdict == "newly-failed"
    assert "cosine 0.024 < 0.99" in check.why
    logged = read_verify_records(default_records_path(pkg), report.core_sha256)
    ranked, excluded = rank(
        read_manifest(pkg),
        probe_host(),
        use_verify_records=True,
        verify_records=logged.measurements,
    )
    assert ID not in [c.id for c in ranked]
    assert next(c for c in excluded if c.id == ID).reason.startswith("parity failed (native")


def test_records_of_another_build_or_schema_are_refused(
    pkg: Path, record: tuple[Path, Path], tmp_path: Path
) -> None:
    other = _edited(
        record[1], tmp_path / "other.json", lambda d: d["package"].update(core_sha256="0" * 64)
    )
    with pytest.raises(PackageError, match="another build of the package"):
        import_gpu_records(pkg, [other])
    old = _edited(
        record[1],
        tmp_path / "old.json",
        lambda d: d.update(schema="compile-pkg.gpu-verification.v2"),
    )
    with pytest.raises(ConfigError, match="run this version's scripts/gpu_verify.py again"):
        import_gpu_records(pkg, [old])
    broken = _edited(record[1], tmp_path / "broken.json", lambda d: d["artifacts"][0].pop("status"))
    with pytest.raises(ConfigError, match=f"artifact {ID}: an unreadable record"):
        import_gpu_records(pkg, [broken])
    assert not default_records_path(pkg).exists()  # nothing recorded from a refused file
