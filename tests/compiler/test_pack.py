"""Packages on disk (issue 13, items 6 and 8; issue 14, item 6): identical files stored once,
`pack` refusing links and special files, `unpack` refusing archives that reach outside, and
atomic writes that survive a kill between renames and collect what killed writers left."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.core.errors import IntegrityError, PackageError
from compiler.packaging.write import collect_staging, pack, unpack, write_atomically
from compiler.serving.loader import load
from compiler.serving.manifest import read_manifest
from tests.compiler.helpers import build

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pkg(mlp_path: Path, tmp_path: Path) -> Path:
    build(mlp_path, tmp_path / "pkg", None, targets=("cpu", "arm"))
    return tmp_path / "pkg"


def test_identical_files_are_stored_once(pkg: Path, tmp_path: Path) -> None:
    cpu, arm = pkg / "artifacts/cpu.ort-fp32/model.onnx", pkg / "artifacts/arm.ort-fp32/model.onnx"
    assert cpu.read_bytes() == arm.read_bytes() and os.path.samefile(cpu, arm)
    m = read_manifest(pkg)
    assert {f.path for f in m.all_files()} >= {
        "artifacts/cpu.ort-fp32/model.onnx",
        "artifacts/arm.ort-fp32/model.onnx",
    }
    with tarfile.open(pack(pkg, tmp_path / "p.tar.gz")) as tar:
        members = {t.name.split("/", 1)[1]: t for t in tar.getmembers() if "/" in t.name}
    kinds = [members[f"artifacts/{t}.ort-fp32/model.onnx"] for t in ("arm", "cpu")]
    assert (
        kinds[0].isreg()
        and kinds[1].islnk()
        and kinds[1].linkname.endswith("arm.ort-fp32/model.onnx")
    )


def test_pack_then_unpack_gives_the_same_package(pkg: Path, tmp_path: Path) -> None:
    archive = pack(pkg, tmp_path / "p.tar.gz")
    assert pack(pkg, tmp_path / "again.tar.gz").read_bytes() == archive.read_bytes()
    main(["unpack", str(archive), "-o", str(tmp_path / "out")])
    out = tmp_path / "out"
    files = sorted(p.relative_to(pkg) for p in pkg.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert all((pkg / f).read_bytes() == (out / f).read_bytes() for f in files)
    with load(out, target="cpu") as s:
        assert s.artifact == "cpu/ort-fp32"


@pytest.mark.parametrize("what", ["symlink", "fifo", "unlisted"])
def test_pack_refuses_links_special_and_unlisted_files(
    pkg: Path, tmp_path: Path, what: str
) -> None:
    extra = pkg / "reports" / "extra"
    if what == "symlink":
        extra.symlink_to("/etc/hostname")  # pack once followed these into the archive
    elif what == "fifo":
        os.mkfifo(extra)
    else:
        extra.write_text("x")
    message = {"symlink": "a symlink", "fifo": "a special file", "unlisted": "not listed"}[what]
    with pytest.raises(IntegrityError, match=f"reports/extra: {message}"):
        pack(pkg, tmp_path / "p.tar.gz")
    assert not (tmp_path / "p.tar.gz").exists()


def _archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([_member("pkg/../../escape")], "'\\.\\.' part"),
        ([_member("/tmp/abs")], "must be relative"),
        ([_member("pkg/link", tarfile.SYMTYPE, "/etc/passwd")], "symlink or special file"),
        ([_member("pkg/dev", tarfile.CHRTYPE)], "symlink or special file"),
        ([_member("pkg/hard", tarfile.LNKTYPE, "/etc/passwd")], "not an earlier file"),
        ([_member("pkg/a"), _member("other/b")], "outside the package folder"),
    ],
)
def test_unpack_refuses_archives_that_reach_outside(
    tmp_path: Path, members: list[tarfile.TarInfo], message: str
) -> None:
    archive = _archive(tmp_path / "bad.tar.gz", [(m, b"data") for m in members])
    with pytest.raises(PackageError, match=message):
        unpack(archive, tmp_path / "out")
    with pytest.raises(PackageError, match=message):
        load(archive)
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "escape").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.tar.gz"]


def test_unpack_checks_the_package_it_extracted(pkg: Path, tmp_path: Path) -> None:
    (pkg / "reports/report.md").write_text("edited")
    with tarfile.open(tmp_path / "p.tar.gz", "w:gz") as tar:
        tar.add(pkg, arcname="pkg")  # packed by hand: pack itself refuses this package
    with pytest.raises(IntegrityError, match="reports/report.md: size"):
        unpack(tmp_path / "p.tar.gz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _fill(staging: Path, text: str) -> None:
    (staging / "manifest.json").write_text(text)


def test_a_failed_write_leaves_the_old_package(tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    write_atomically(out, lambda s: _fill(s, "old"))

    def boom(staging: Path) -> None:
        _fill(staging, "new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomically(out, boom)
    assert (out / "manifest.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]


KILLER = """
import os, signal, sys
from pathlib import Path
import compiler.packaging.write as w
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
real_rename, real_exchange = os.rename, w._exchange
def rename(a, b):
    real_rename(a, b)
    if "{point}" == "between-renames" and ".old-" in str(b) and str(b).endswith("/pkg"):
        die()  # the old package moved aside, the new one not yet in place
def exchange(a, b):
    real_exchange(a, b)
    die()  # swapped: the old package now sits in the staging folder
os.rename = rename
w._exchange = (lambda a, b: False) if "{point}" == "between-renames" else exchange
w.write_atomically(Path(sys.argv[1]), lambda s: (s / "manifest.json").write_text("new"))
"""


@pytest.mark.parametrize(("point", "left"), [("between-renames", "old"), ("after-exchange", "new")])
def test_a_kill_between_renames_keeps_a_package_and_the_next_write_collects(
    tmp_path: Path, point: str, left: str
) -> None:
    out = tmp_path / "pkg"
    write_atomically(out, lambda s: _fill(s, "old"))
    script = textwrap.dedent(KILLER).format(point=point)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script, str(out)], env=env, check=False)
    assert proc.returncode == -9  # killed at `point`
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "pkg"]
    assert leftovers and all(n.startswith(".pkg.") for n in leftovers)
    collect_staging(out)  # what the next write does first
    assert (out / "manifest.json").read_text() == left
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]


def test_a_live_writer_s_staging_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    seen: list[list[str]] = []

    def fill(staging: Path) -> None:
        collect_staging(out)  # another writer starting meanwhile
        seen.append([p.name for p in tmp_path.iterdir()])
        _fill(staging, "new")

    write_atomically(out, fill)
    assert any(n.startswith(".pkg.tmp-") for n in seen[0])
    assert (out / "manifest.json").read_text() == "new"


def test_an_artifact_whose_pass_failed_is_failed_with_that_pass_s_reason(
    mlp_path: Path, tmp_path: Path
) -> None:
    ort = {"compile": {"backend": "onnxruntime"}}
    broken = {"passes": [{"name": "quantize", "exclude_nodes": ["no_such_node"]}], **ort}
    raw = {"targets": {"cpu": {"variants": {"int8": broken, "ort-fp32": ort}}}}
    outcome = build(mlp_path, tmp_path / "pkg", None, targets=("cpu",), raw=raw)
    by_id = {a.id: a for a in outcome.manifest.artifacts}
    assert by_id["cpu/ort-fp32"].status == "built"  # the other artifact's work is kept
    failed = by_id["cpu/int8"]
    assert failed.status == "failed" and failed.install == ""
    assert (
        failed.reason.startswith("cpu:quantize#")
        and "exclude_nodes ['no_such_node']" in failed.reason
    )
