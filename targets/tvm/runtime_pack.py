"""Assemble a runtime-only copy of the installed TVM to carry to a serving/GPU host.

The copy holds the `tvm` and `tvm_ffi` Python packages without the 250 MB compiler library,
vendored sources and headers, plus the pure-Python or small binary packages runtime-only
`import tvm` touches, and `libcudart.so.13` beside `libtvm_runtime_cuda.so` (its RUNPATH is
$ORIGIN). Put the folder on PYTHONPATH and set TVM_USE_RUNTIME_LIB=1.

The packages come from this interpreter's installation, so the copy is for this host's CPython
version (the tvm_ffi core and ml_dtypes are compiled extensions). For a host with another
CPython, pass `wheels`: a folder of that version's wheels of all four packages, e.g.

    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 -d WHEELS apache-tvm==V apache-tvm-ffi==V ml_dtypes==V \
        typing_extensions==V
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["assemble_runtime", "main"]

_SKIP_DIRS = {
    "3rdparty",
    "src",
    "include",
    "web",
    "cython",
    "cmake",
    "lib64",
    "__pycache__",
    "share",
}
_SKIP_FILES = {"libtvm_compiler.so", "CMakeLists.txt"}
# Small packages runtime-only `import tvm` needs besides numpy (present wherever torch is).
_EXTRA_PACKAGES = ("ml_dtypes", "typing_extensions")


# The wheel each package comes in, for `wheels` (its file name starts with this).
_WHEEL_NAMES = {
    "tvm": "apache_tvm-",
    "tvm_ffi": "apache_tvm_ffi-",
    "ml_dtypes": "ml_dtypes-",
    "typing_extensions": "typing_extensions-",
}


def _unpack_wheels(wheels: Path, site: Path) -> None:
    """Unzip one wheel of each needed package from `wheels` into `site`."""
    for name, prefix in _WHEEL_NAMES.items():
        found = sorted(wheels.glob(f"{prefix}*.whl"))
        if len(found) != 1:
            raise SystemExit(
                f"{wheels}: needs exactly one {prefix}*.whl for {name}, found {len(found)}; "
                "pip download --no-deps --only-binary=:all: --python-version X.Y ... -d "
                f"{wheels} (targets/tvm/runtime_pack.py says how)"
            )
        with zipfile.ZipFile(found[0]) as whl:
            whl.extractall(site)


def _package_dir(name: str, site: Path | None = None) -> Path:
    if site is not None:
        for candidate in (site / name, site / f"{name}.py"):
            if candidate.exists():
                return candidate
        raise SystemExit(f"{site}: the wheels hold no {name} package")
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{name} is not installed here; install apache-tvm first")
    origin = Path(spec.origin)
    return origin.parent if origin.name == "__init__.py" else origin


def _copy_tree(src: Path, dst: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in _SKIP_DIRS or n in _SKIP_FILES or n.endswith(".pyc")}

    shutil.copytree(src, dst, ignore=ignore, symlinks=False)


def _copy_metadata(dist: str, site: Path | None, out: Path) -> None:
    """The distribution's METADATA in a `<name>-<version>.dist-info` folder of the copy: the
    serving host's `compile-pkg` reads the runtime's version from it (compiler/core/host.py)."""
    if site is not None:
        found = sorted(site.glob(f"{dist.replace('-', '_')}-*.dist-info/METADATA"))
        if not found:
            return
        source, folder = found[0], found[0].parent.name
    else:
        meta = importlib.metadata.distribution(dist)
        folder = f"{dist.replace('-', '_')}-{meta.version}.dist-info"
        located = meta.locate_file(f"{folder}/METADATA")
        source = Path(str(located))
        if not source.is_file():
            (out / folder).mkdir()
            (out / folder / "METADATA").write_text(
                f"Metadata-Version: 2.1\nName: {dist}\nVersion: {meta.version}\n"
            )
            return
    (out / folder).mkdir()
    shutil.copy2(source, out / folder / "METADATA")


def _cudart() -> Path | None:
    for folder in ("/usr/local/cuda/lib64", "/usr/local/cuda/lib", "/usr/local/cuda-13.0/lib"):
        lib = Path(folder) / "libcudart.so.13"
        if lib.is_file():
            return lib.resolve()
    return None


def assemble_runtime(out: Path, wheels: Path | None = None) -> Path:
    """Write the runtime-only copy into `out` (replaced if present); return `out`.

    With `wheels`, the packages come from the wheels in that folder instead of this
    interpreter's installation (a copy for another CPython version).
    """
    if wheels is None:
        return _assemble(out, None)
    with tempfile.TemporaryDirectory(prefix="tvm-wheels-") as tmp:
        _unpack_wheels(wheels, Path(tmp))
        return _assemble(out, Path(tmp))


def _assemble(out: Path, site: Path | None) -> Path:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in ("tvm", "tvm_ffi"):
        _copy_tree(_package_dir(name, site), out / name)
    for name in _EXTRA_PACKAGES:
        src = _package_dir(name, site)
        if src.is_dir():
            _copy_tree(src, out / name)
        else:
            shutil.copy2(src, out / src.name)
    for dist in ("apache-tvm", "apache-tvm-ffi"):  # so importlib.metadata names the versions
        _copy_metadata(dist, site, out)
    cudart = _cudart()
    if cudart is not None:
        shutil.copy2(cudart, out / "tvm" / "lib" / "libcudart.so.13")
    made_for = (
        f"the wheels {', '.join(sorted(p.name for p in site.glob('*.dist-info')))}"
        if site is not None
        else f"CPython {sys.version_info.major}.{sys.version_info.minor} ({sys.platform})"
    )
    (out / "TVM_RUNTIME_ONLY.txt").write_text(
        f"runtime-only TVM from {made_for}; use with TVM_USE_RUNTIME_LIB=1 and this folder on "
        "PYTHONPATH\n"
    )
    return out


def main(argv: list[str], wheels: Path | None = None) -> int:
    out = Path(argv[0]) if argv else Path("build/tvm_runtime")
    assemble_runtime(out, wheels)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
