"""The closed file set: every file of a package is listed and hashed, nothing else is there,
and runtimes open only what was hashed (issue 13, attacks 1 and 2)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from compiler.cli import main
from compiler.core.errors import CompilePkgError, IntegrityError, PackageError
from compiler.serving.integrity import VerifiedCopy, check_package
from compiler.serving.loader import load
from compiler.serving.manifest import read_manifest
from tests.serving.helpers import artifact, edit_doc, file_entry, read_doc

X = {"x": np.ones((2, 8), np.float32)}


def _tamper(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "flip":  # in place: hard links to the same bytes see it too
        with path.open("r+b") as fh:
            fh.seek(len(data) // 2)
            fh.write(bytes([data[len(data) // 2] ^ 0x01]))
    elif how == "truncate":
        with path.open("r+b") as fh:
            fh.truncate(len(data) // 2)
    elif how == "replace":  # a new file of the same size under the same name
        path.unlink()
        path.write_bytes(bytes(255 - b for b in data))
    else:
        path.unlink()


def _files(pkg: Path) -> list[str]:
    return sorted(p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file())


def test_every_file_tampered_four_ways_is_refused(built: Path, tmp_path: Path) -> None:
    files = _files(built)
    assert {"manifest.json", "reference/model.onnx", "reports/report.md"} <= set(files)
    assert any(f.startswith("artifacts/") for f in files)
    refused, cases = [], []
    for i, rel in enumerate(files):
        for how in ("flip", "truncate", "replace", "delete"):
            pkg = Path(shutil.copytree(built, tmp_path / f"{i}-{how}"))
            _tamper(pkg / rel, how)
            cases.append((rel, how))
            try:
                load(pkg).close()
            except (IntegrityError, PackageError):
                refused.append((rel, how))
            shutil.rmtree(pkg)
    print(f"tampered files refused: {len(refused)} / {len(cases)}")
    assert refused == cases


def test_loading_a_sound_package_checks_every_file(pkg: Path) -> None:
    check = check_package(pkg, read_manifest(pkg))
    assert check.ok and check.files == len(_files(pkg)) - 1  # all but manifest.json
    with load(pkg) as s:
        assert s.run(X)["y"].shape == (2, 4)
        assert s.integrity_failures == [] and s.signatures == "unsigned"


@pytest.mark.parametrize(
    "name",
    ["../../reference/model.onnx", "/etc/hostname", "unlisted.onnx", "./model.onnx", "a//b"],
)
def test_runtime_settings_cannot_name_a_file_outside_the_listed_ones(pkg: Path, name: str) -> None:
    (pkg / "artifacts/cpu.fast/unlisted.onnx").write_bytes(b"not hashed")

    def point(doc: dict) -> None:
        artifact(doc, "cpu/fast")["runtime"]["model"] = name

    edit_doc(pkg, point)  # the attacker recomputes core_sha256: still refused
    with pytest.raises(PackageError, match="runtime settings name|inside the package|'\\.\\.'"):
        load(pkg, require=["cpu/fast"])


def test_an_artifact_directory_outside_artifacts_is_refused(pkg: Path) -> None:
    edit_doc(pkg, lambda doc: artifact(doc, "cpu/fast").update(directory="reference"))
    with pytest.raises(PackageError, match="directory must be artifacts/cpu.fast"):
        load(pkg)


def test_an_unlisted_file_is_an_integrity_error(pkg: Path) -> None:
    (pkg / "artifacts/cpu.fast/libextra.so").write_bytes(b"\x7fELF")
    with pytest.raises(IntegrityError, match="libextra.so: not listed in the manifest"):
        load(pkg)


def test_a_listed_file_replaced_by_a_symlink_is_refused(pkg: Path, tmp_path: Path) -> None:
    model = pkg / "artifacts/cpu.fast/model.onnx"
    outside = tmp_path / "same-bytes.onnx"
    shutil.copyfile(model, outside)
    model.unlink()
    model.symlink_to(outside)  # same bytes, so only the link itself is wrong
    with pytest.raises(IntegrityError, match="cpu.fast/model.onnx: a symlink"):
        load(pkg)


def test_a_core_edit_is_refused_until_the_core_is_recomputed(pkg: Path) -> None:
    edit_doc(pkg, lambda d: d["package"].update(license="MIT"), recompute_core=False)
    with pytest.raises(IntegrityError, match="core_sha256 does not match"):
        load(pkg)


def test_an_edited_verdict_is_refused_until_the_records_digest_is_recomputed(pkg: Path) -> None:
    """Measurements decide what serves: one flipped from passed to failed, the core untouched."""

    def fail_fast(doc: dict[str, object]) -> None:
        records = doc["measurements"]
        assert isinstance(records, dict)
        records["cpu/fast"]["parity"][-1]["status"] = "failed"

    edit_doc(pkg, fail_fast, recompute_core=False)
    with pytest.raises(IntegrityError, match="records_sha256 does not match"):
        load(pkg)
    edit_doc(pkg, lambda d: None)  # an attacker who recomputes it is not stopped by hashes
    with load(pkg) as session:
        assert session.artifact != "cpu/fast"


def test_the_cli_run_exits_non_zero_on_a_tampered_package(pkg: Path) -> None:
    _tamper(pkg / "artifacts/cpu.basic/model.onnx", "flip")
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(pkg)])
    assert exit_.value.code == IntegrityError.exit_code


def test_fallback_mode_skips_the_damaged_artifact_and_records_it(
    pkg: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _tamper(pkg / "artifacts/cpu.basic/model.onnx", "replace")
    with pytest.raises(IntegrityError, match="cpu.basic/model.onnx: sha256 differs"):
        load(pkg, order=["cpu/basic", "cpu/fast"])
    with load(pkg, order=["cpu/basic", "cpu/fast"], integrity="fallback") as s:
        assert s.artifact == "cpu/fast"
        assert any("cpu.basic/model.onnx" in f for f in s.integrity_failures)
        decision = {d.artifact: str(d) for d in s.decisions}["cpu/basic"]
        assert decision.startswith("excluded: integrity:")
        assert s.describe()["integrity_failures"] == s.integrity_failures
    assert "integrity failure (integrity='fallback'" in caplog.text


def test_runtimes_load_the_verified_copy_not_the_package(pkg: Path) -> None:
    with load(pkg, require=["cpu/basic"]) as s:  # a swap after the check changes nothing
        os.replace(pkg / "reference/model.onnx", pkg / "artifacts/cpu.basic/model.onnx")
        assert s.run(X)["y"].shape == (2, 4)
    a = read_manifest(pkg).artifact("cpu/fast")
    with VerifiedCopy(pkg, a) as copy:
        assert copy.artifact_dir.is_dir() and not copy.artifact_dir.is_relative_to(pkg)
        assert (copy.artifact_dir / "model.onnx").read_bytes() == (
            pkg / "artifacts/cpu.fast/model.onnx"
        ).read_bytes()
    assert not copy.root.exists()
    _tamper(pkg / "artifacts/cpu.fast/model.onnx", "flip")  # after any check of the package
    with pytest.raises(IntegrityError, match="does not match its sha256"):
        VerifiedCopy(pkg, a)


def test_a_missing_reference_or_report_is_refused(pkg: Path) -> None:
    (pkg / "reports/latency.json").unlink()
    with pytest.raises(IntegrityError, match="reports/latency.json: missing"):
        load(pkg)


def test_a_manifest_listing_a_file_twice_is_refused(pkg: Path) -> None:
    def twice(doc: dict) -> None:
        a = artifact(doc, "cpu/fast")
        a["files"].append(dict(a["files"][0]))

    edit_doc(pkg, twice)
    with pytest.raises(CompilePkgError, match="listed twice"):
        load(pkg)


def test_a_listed_and_hashed_extra_file_is_fine(pkg: Path) -> None:
    extra = pkg / "artifacts/cpu.fast/NOTICE"
    extra.write_text("licence text\n")
    edit_doc(
        pkg,
        lambda doc: artifact(doc, "cpu/fast")["files"].append(
            file_entry(extra, "artifacts/cpu.fast/NOTICE")
        ),
    )
    with load(pkg, require=["cpu/fast"]) as s:
        assert s.artifact == "cpu/fast"
    assert read_doc(pkg)["artifacts"]
