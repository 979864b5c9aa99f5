"""Signed packages and native code (issue 13, item 2): a listed, hashed `.so` in an unsigned
package never runs; signatures are verified against a trust policy."""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.core.errors import IntegrityError, NoCompatibleArtifact
from compiler.packaging.write import rewrite_manifest
from compiler.serving.loader import load
from compiler.serving.manifest import read_manifest
from compiler.serving.signing import (
    TrustPolicy,
    check_signatures,
    generate_key,
    read_signatures,
    sign_package,
)
from tests.serving.helpers import artifact, edit_doc, file_entry

# a library whose constructor leaves a mark: proof of whether it was ever loaded
EVIL_C = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void mark(void) {
    FILE *f = fopen(getenv("EVIL_MARK"), "w");
    if (f) { fputs("ran", f); fclose(f); }
}
"""


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "signer.pem", tmp_path / "signer.pub"
    generate_key(private, public)
    return private, public


def _with_native_artifact(pkg: Path, tmp_path: Path) -> Path:
    """Add `cpu/evil`: a TVM artifact whose library is listed with its real sha256."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("needs a C compiler to build the test library")
    src = tmp_path / "evil.c"
    src.write_text(EVIL_C)
    folder = pkg / "artifacts/cpu.evil"
    folder.mkdir()
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(folder / "lib.so"), str(src)], check=True)

    def add(doc: dict) -> None:
        base = artifact(doc, "cpu/fast")
        evil = copy.deepcopy(base)
        evil.update(id="cpu/evil", variant="evil", backend="tvm", directory="artifacts/cpu.evil")
        evil["files"] = [file_entry(folder / "lib.so", "artifacts/cpu.evil/lib.so")]
        evil["requirements"] |= {"runtime": "tvm", "min_runtime_version": ""}
        evil["runtime"] = {"backend": "tvm", "library": "lib.so", "device": "cpu"}
        evil["runtime"] |= {"inputs": [], "outputs": []}
        doc["artifacts"].append(evil)

    edit_doc(pkg, add)
    return tmp_path / "mark"


needs_tvm = pytest.mark.skipif(
    importlib.util.find_spec("tvm") is None, reason="needs the tvm runtime importable"
)


@needs_tvm
def test_a_listed_library_in_an_unsigned_package_never_runs(
    pkg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = _with_native_artifact(pkg, tmp_path)
    monkeypatch.setenv("EVIL_MARK", str(mark))
    with pytest.raises(NoCompatibleArtifact, match="native code and the package is unsigned"):
        load(pkg, require=["cpu/evil"], allow_unverified=True)
    with load(pkg, order=["cpu/evil"], allow_unverified=True) as s:  # the rest still serves
        assert s.artifact != "cpu/evil"
        assert s.artifact.startswith("cpu/") or s.artifact == "reference"
        assert (
            "refused: a TVM shared library"
            in {d.artifact: d.reason for d in s.decisions}["cpu/evil"]
        )
    assert not mark.exists()


@needs_tvm
def test_native_code_loads_from_a_package_signed_by_a_trusted_key(
    pkg: Path, tmp_path: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = _with_native_artifact(pkg, tmp_path)
    monkeypatch.setenv("EVIL_MARK", str(mark))
    private, public = keys
    sign_package(pkg, private, "release-bot")
    other = tmp_path / "other.pem"
    generate_key(other, tmp_path / "other.pub")
    untrusted = TrustPolicy.from_files([tmp_path / "other.pub"])
    with pytest.raises(NoCompatibleArtifact, match="signed only by keys that are not trusted"):
        load(pkg, require=["cpu/evil"], allow_unverified=True, trust=untrusted)
    assert not mark.exists()
    # trusted: the library is loaded (it is not a real TVM module, so TVM then fails on it)
    with pytest.raises(NoCompatibleArtifact, match="cpu/evil: failed to load"):
        load(
            pkg, require=["cpu/evil"], allow_unverified=True, trust=TrustPolicy.from_files([public])
        )
    assert mark.read_text() == "ran"


def test_signatures_are_verified_and_named(pkg: Path, keys: tuple[Path, Path]) -> None:
    private, public = keys
    rec = sign_package(pkg, private, "release-bot")
    trusted = TrustPolicy.from_files([public])
    status = check_signatures(pkg, read_manifest(pkg), trusted)
    assert status.trusted == (f"release-bot ({rec.key_id})",)
    with load(pkg, trust=trusted) as s:
        assert s.signatures == f"signed by release-bot ({rec.key_id}) (trusted)"
        assert s.describe()["signatures"] == s.signatures
    with load(pkg, trust=TrustPolicy()) as s:
        assert "not a trusted key" in s.signatures


def test_a_forged_or_stale_signature_is_an_integrity_error(
    pkg: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    sign_package(pkg, private)
    sigs = pkg / "signatures.json"
    doc = json.loads(sigs.read_text())
    raw = bytearray(base64.b64decode(doc["signatures"][0]["signature"]))
    raw[0] ^= 1
    doc["signatures"][0]["signature"] = base64.b64encode(bytes(raw)).decode()
    sigs.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="does not verify"):
        load(pkg, trust=TrustPolicy.from_files([public]))
    sign_package(pkg, private)  # re-signed: sound again
    edit_doc(pkg, lambda d: d["package"].update(license="MIT"))  # core recomputed by the attacker
    with pytest.raises(IntegrityError, match="changed after it was signed"):
        load(pkg)


def test_sign_refuses_a_tampered_package(pkg: Path, keys: tuple[Path, Path]) -> None:
    (pkg / "reference/outputs.npz").write_bytes(b"changed")
    with pytest.raises(IntegrityError):
        sign_package(pkg, keys[0])
    assert read_signatures(pkg) == []


def test_a_signature_survives_a_rewrite_of_the_measurements(
    pkg: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    sign_package(pkg, private)
    m = read_manifest(pkg)
    m.measurements["cpu/fast"].parity.clear()
    rewrite_manifest(pkg, m)
    status = check_signatures(pkg, read_manifest(pkg), TrustPolicy.from_files([public]))
    assert status.trusted_signed


def test_cli_keygen_and_sign(pkg: Path, tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    main(["keygen", str(key)])
    assert (tmp_path / "k.pem.pub").is_file() and oct(key.stat().st_mode & 0o777) == "0o600"
    main(["sign", str(pkg), "--key", str(key), "--signer", "ci"])
    assert read_signatures(pkg)[0].signer == "ci"
    with pytest.raises(SystemExit) as refused:  # an existing key is never overwritten
        main(["keygen", str(key)])
    assert refused.value.code == 2


@needs_tvm
def test_verify_never_runs_an_unsigned_library(
    pkg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`compile-pkg verify` runs artifacts too: the same trust policy as load()."""
    from compiler.packaging.reverify import verify_package

    mark = _with_native_artifact(pkg, tmp_path)
    monkeypatch.setenv("EVIL_MARK", str(mark))
    report = verify_package(pkg, measure_latency=False, records=tmp_path / "records.json")
    evil = next(c for c in report.artifacts if c.id == "cpu/evil")
    assert evil.verdict == "not-checked" and "native code and the package is unsigned" in evil.why
    assert not mark.exists()
