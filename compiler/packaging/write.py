"""Writing packages: atomically into place, manifest rewrites in place, and a reproducible
`pack` into one archive.

A package is written to a temporary sibling folder and renamed into place: a crash or kill
leaves the old package (or none), never a half-written one.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from compiler.core.errors import PackageError
from compiler.packaging.report import write_reports
from compiler.serving.manifest import Manifest, manifest_json
from compiler.serving.selection import select_order

__all__ = ["finish_package", "library_versions", "pack", "rewrite_manifest", "write_atomically"]

_T = TypeVar("_T")


def library_versions() -> dict[str, str]:
    """The versions of the libraries every build uses (a backend adds its own)."""
    import networkx
    import numpy
    import onnx
    import onnxruntime
    import pydantic

    return {
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "networkx": networkx.__version__,
        "pydantic": pydantic.__version__,
    }


def write_atomically(out: Path, fill: Callable[[Path], _T]) -> _T:
    """Create a staging folder beside `out`, let `fill(staging)` populate it, then swap it in."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        result = fill(staging)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "pkg")
        os.rename(staging, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return result
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def finish_package(staging: Path, manifest: Manifest) -> None:
    """Write the reports and manifest.json of a package being assembled in `staging`."""
    write_reports(staging, manifest)
    (staging / "manifest.json").write_text(manifest_json(manifest), encoding="utf-8")


def rewrite_manifest(package: Path, manifest: Manifest) -> None:
    """Replace manifest.json and the reports in place, each file atomically."""
    manifest.selection = select_order(manifest)
    write_reports(package, manifest)
    tmp = package / ".manifest.json.tmp"
    tmp.write_text(manifest_json(manifest), encoding="utf-8")
    os.replace(tmp, package / "manifest.json")


def pack(package: Path, archive: Path) -> Path:
    """A reproducible .tar.gz: sorted entries, mtime 0, owner root:root, fixed modes."""
    if not (package / "manifest.json").is_file():
        raise PackageError(f"{package}: not a package (no manifest.json)")
    prefix = package.name
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(archive.name + ".tmp")
    paths = sorted(package.rglob("*"), key=lambda p: p.relative_to(package).as_posix())
    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for p in [package, *paths]:
            rel = p.relative_to(package).as_posix()
            info = tarfile.TarInfo(prefix if rel == "." else f"{prefix}/{rel}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
            if p.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = p.stat().st_size, 0o644
                with p.open("rb") as fh:
                    tar.addfile(info, fh)
    os.replace(tmp, archive)
    return archive
