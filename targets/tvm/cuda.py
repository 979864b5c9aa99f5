"""CUDA helpers for TVM builds: a link-time libcuda.so.1 stand-in and fatbin inspection.

TVM's CUDA runtime library (`libtvm_runtime_cuda.so`) links against the driver library
`libcuda.so.1`. On a build host without an NVIDIA driver that library is missing, TVM's
CUDA codegen is then not registered, and `tvm.compile` silently emits CUDA *source* instead
of device code. The stand-in below is a tiny shared library whose every function returns
CUDA_ERROR_NO_DEVICE; it is built into a cache folder, loaded only in the build subprocess,
and never copied into an artifact. On a host with a driver the real library is used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from compiler.core.errors import BuildError

__all__ = [
    "FatbinEntry",
    "cuda_source_markers",
    "driver_symbols",
    "ensure_libcuda",
    "fatbin_entries",
    "have_real_driver",
]

_FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)
_CUDA_ERROR_NO_DEVICE = 100
# Used when `nm` is missing; these are what libtvm_runtime_cuda.so 0.27 imports.
_FALLBACK_SYMBOLS = (
    "cuDeviceGetName",
    "cuFuncSetAttribute",
    "cuGetErrorName",
    "cuGetErrorString",
    "cuLaunchKernelEx",
    "cuModuleGetFunction",
    "cuModuleLoadData",
    "cuModuleUnload",
    "cuTensorMapEncodeTiled",
)


def have_real_driver() -> bool:
    """True when the host's own libcuda.so.1 can be loaded."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def driver_symbols(runtime_cuda_lib: Path) -> list[str]:
    """The driver API functions (cu*) that `runtime_cuda_lib` imports."""
    nm = shutil.which("nm")
    if nm is None:
        return list(_FALLBACK_SYMBOLS)
    out = subprocess.run(
        [nm, "-D", "--undefined-only", str(runtime_cuda_lib)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = sorted({m.group(1) for m in re.finditer(r"\bU (cu[A-Z]\w*)", out)})
    return names or list(_FALLBACK_SYMBOLS)


def ensure_libcuda(cache_dir: Path, runtime_cuda_lib: Path) -> Path:
    """Build (once per symbol set) the libcuda.so.1 stand-in under `cache_dir`; return it."""
    symbols = driver_symbols(runtime_cuda_lib)
    source = (
        "/* link-time stand-in for libcuda.so.1; build hosts only, never shipped */\n"
        f"#define STUB(name) int name(void) {{ return {_CUDA_ERROR_NO_DEVICE}; }}\n"
        + "".join(f"STUB({s})\n" for s in symbols)
    )
    key = hashlib.sha256(source.encode()).hexdigest()[:16]
    folder = cache_dir / f"libcuda-standin-{key}"
    lib = folder / "libcuda.so.1"
    if lib.is_file():
        return lib
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise BuildError(
            "tvm gpu build: no NVIDIA driver here and no C compiler to build the libcuda.so.1 "
            "stand-in; install gcc (apt-get install gcc)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "libcuda_standin.c").write_text(source)
    tmp = folder / f"libcuda.so.1.tmp{id(source)}"
    proc = subprocess.run(
        [
            cc,
            "-shared",
            "-fPIC",
            "-O1",
            "-Wl,-soname,libcuda.so.1",
            "-o",
            str(tmp),
            str(folder / "libcuda_standin.c"),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise BuildError(
            f"tvm gpu build: cannot build the libcuda.so.1 stand-in: {proc.stderr[-400:]}"
        )
    tmp.replace(lib)
    return lib


@dataclass(frozen=True)
class FatbinEntry:
    kind: str  # "elf" (SASS for one sm) | "ptx"
    sm: int  # 80, 86, ...
    size: int


def fatbin_entries(data: bytes) -> list[FatbinEntry]:
    """Every entry of every fatbin container embedded in `data` (e.g. a shared library).

    Layout (CUDA fatbin v1): a 16-byte container header (magic, version, header size,
    payload size), then entries with a header of their own: kind (1 PTX, 2 ELF) at 0, header
    size at 4, payload size at 8, and the SM number at 28.
    """
    entries: list[FatbinEntry] = []
    pos = data.find(_FATBIN_MAGIC)
    while pos != -1:
        _, header, size = struct.unpack_from("<HHQ", data, pos + 4)
        off, end = pos + header, pos + header + size
        while off + 32 <= end <= len(data):
            kind, _, ehead, payload = struct.unpack_from("<HHIQ", data, off)
            (sm,) = struct.unpack_from("<I", data, off + 28)
            if ehead == 0:
                break
            entries.append(FatbinEntry({1: "ptx", 2: "elf"}.get(kind, str(kind)), sm, payload))
            off += ehead + payload
        pos = data.find(_FATBIN_MAGIC, max(end, pos + 1))
    return entries


def cuda_source_markers(data: bytes) -> list[str]:
    """Signs of CUDA C source embedded in a binary (what a source-only CUDA module holds)."""
    return [m.decode() for m in (b'extern "C" __global__', b"__global__ void") if m in data]
