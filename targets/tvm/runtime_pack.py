"""Assemble a runtime-only copy of the installed TVM to carry to a serving/GPU host.

The copy holds the `tvm` and `tvm_ffi` Python packages without the 250 MB compiler library,
vendored sources and headers, plus the pure-Python or small binary packages runtime-only
`import tvm` touches, and `libcudart.so.13` beside `libtvm_runtime_cuda.so` (its RUNPATH is
$ORIGIN). Put the folder on PYTHONPATH and set TVM_USE_RUNTIME_LIB=1. It is built for this
host's CPython version and platform (the tvm_ffi core is a compiled extension).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
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


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{name} is not installed here; install apache-tvm first")
    origin = Path(spec.origin)
    return origin.parent if origin.name == "__init__.py" else origin


def _copy_tree(src: Path, dst: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in _SKIP_DIRS or n in _SKIP_FILES or n.endswith(".pyc")}

    shutil.copytree(src, dst, ignore=ignore, symlinks=False)


def _cudart() -> Path | None:
    for folder in ("/usr/local/cuda/lib64", "/usr/local/cuda/lib", "/usr/local/cuda-13.0/lib"):
        lib = Path(folder) / "libcudart.so.13"
        if lib.is_file():
            return lib.resolve()
    return None


def assemble_runtime(out: Path) -> Path:
    """Write the runtime-only copy into `out` (replaced if present); return `out`."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in ("tvm", "tvm_ffi"):
        _copy_tree(_package_dir(name), out / name)
    for name in _EXTRA_PACKAGES:
        src = _package_dir(name)
        if src.is_dir():
            _copy_tree(src, out / name)
        else:
            shutil.copy2(src, out / src.name)
    cudart = _cudart()
    if cudart is not None:
        shutil.copy2(cudart, out / "tvm" / "lib" / "libcudart.so.13")
    (out / "TVM_RUNTIME_ONLY.txt").write_text(
        f"runtime-only TVM for CPython {sys.version_info.major}.{sys.version_info.minor} "
        f"({sys.platform}); use with TVM_USE_RUNTIME_LIB=1 and this folder on PYTHONPATH\n"
    )
    return out


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path("build/tvm_runtime")
    assemble_runtime(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
