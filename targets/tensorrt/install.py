"""Which TensorRT wheels fit this host, and which TensorRT is installed.

NVIDIA ships TensorRT 10 for pip per CUDA major: `tensorrt-cu12` (CUDA 12, NVIDIA driver
R525 or newer) and `tensorrt-cu13` (CUDA 13, driver R580 or newer); the bare `tensorrt`
name pulls the newest CUDA major, so on a CUDA 12 driver `trt.Builder()` fails. The driver's
CUDA version comes from NVML (`libnvidia-ml.so.1`, loaded with ctypes: the library every
NVIDIA driver installs), and `advice_for_driver` maps it to the extra to install with the
matching `cuda-python`. The installed TensorRT is read from package metadata under every name
NVIDIA has published it (`tensorrt`, `tensorrt-cu11/12/13`, their `-bindings` and `-libs`),
so a cu11 or split install never reads as version "unknown".

Standard library only: the serving host's runtime imports this.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DriverInfo",
    "InstallAdvice",
    "TensorRTInstall",
    "advice_for_driver",
    "cuda_flavour",
    "cudart_wheel_dir",
    "expose_cudart",
    "find_tensorrt",
    "install_advice",
    "pick_tensorrt",
    "probe_driver",
]

NVML_LIBRARIES = ("libnvidia-ml.so.1", "libnvidia-ml.so", "nvml.dll")

# CUDA major -> (the project's extra, the driver branch it needs, the matching cuda-python)
_EXTRAS: dict[int, tuple[str, str, str]] = {
    13: ("tensorrt-cu13", "R580", "cuda-python>=13,<14"),
    12: ("tensorrt-cu12", "R525", "cuda-python>=12.6,<13"),
}


@dataclass(frozen=True)
class DriverInfo:
    """The NVIDIA driver of this host as NVML reports it; `problem` says why it is unknown."""

    driver: str = ""
    cuda: tuple[int, int] | None = None  # the newest CUDA version the driver supports
    problem: str = ""

    def describe(self) -> str:
        if self.cuda is None:
            return self.problem or "no NVIDIA driver"
        return f"NVIDIA driver {self.driver} (CUDA {self.cuda[0]}.{self.cuda[1]})"


@dataclass(frozen=True)
class InstallAdvice:
    """What to install for TensorRT on a driver: `extra` is None when no extra fits."""

    extra: str | None
    pip: str  # the command line to run
    cuda_python: str
    reason: str

    def line(self) -> str:
        return f"{self.reason}: {self.pip}"


def probe_driver(libraries: Iterable[str] = NVML_LIBRARIES) -> DriverInfo:
    """The driver version and its CUDA version from NVML; never raises."""
    nvml = None
    for name in libraries:
        try:
            nvml = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if nvml is None:
        return DriverInfo(problem="no NVIDIA driver (libnvidia-ml.so.1 is not installed)")
    if nvml.nvmlInit_v2() != 0:
        return DriverInfo(problem="NVIDIA driver installed but NVML cannot start (no GPU?)")
    try:
        version = ctypes.c_int(0)
        if nvml.nvmlSystemGetCudaDriverVersion_v2(ctypes.byref(version)) != 0:
            return DriverInfo(problem="NVML does not report the driver's CUDA version")
        text = ctypes.create_string_buffer(96)
        driver = text.value.decode() if nvml.nvmlSystemGetDriverVersion(text, 96) == 0 else ""
        return DriverInfo(driver=driver, cuda=(version.value // 1000, version.value % 1000 // 10))
    finally:
        nvml.nvmlShutdown()


def advice_for_driver(cuda: tuple[int, int] | None) -> InstallAdvice:
    """The extra that fits a driver supporting CUDA `cuda` (None: no driver found)."""
    if cuda is None:
        return InstallAdvice(
            None,
            "install the NVIDIA driver (R580+ for CUDA 13, R525+ for CUDA 12), then "
            "pip install 'compile-pkg[tensorrt-cu13]' or 'compile-pkg[tensorrt-cu12]'",
            "",
            "no NVIDIA driver on this host",
        )
    major = cuda[0]
    fit = _EXTRAS.get(major) or (_EXTRAS[max(_EXTRAS)] if major > max(_EXTRAS) else None)
    if fit is None:
        return InstallAdvice(
            None,
            "upgrade the NVIDIA driver to R525 or newer (CUDA 12), then "
            "pip install 'compile-pkg[tensorrt-cu12]'",
            "",
            f"the driver supports CUDA {cuda[0]}.{cuda[1]}; TensorRT 10 wheels need CUDA 12+",
        )
    extra, branch, cuda_python = fit
    return InstallAdvice(
        extra,
        f"pip install 'compile-pkg[{extra}]'",
        cuda_python,
        f"the driver supports CUDA {cuda[0]}.{cuda[1]} ({branch}+ branch)",
    )


def install_advice(driver: DriverInfo | None = None) -> str:
    """One line for error messages: this host's driver and what to install for it."""
    d = driver if driver is not None else probe_driver()
    return advice_for_driver(d.cuda).line()


@dataclass(frozen=True)
class TensorRTInstall:
    """The installed TensorRT: its version, the distribution that said so, its CUDA major."""

    version: str
    distribution: str
    cuda: str  # "cu12", "cu13", "cu11" or "" when the name does not say


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def cuda_flavour(distribution: str) -> str:
    """'tensorrt-cu12-bindings' -> 'cu12'; '' for a name without a CUDA major."""
    m = re.fullmatch(
        r"tensorrt(?:-lean|-dispatch)?-(cu\d+)(?:-bindings|-libs)?", _norm(distribution)
    )
    return m.group(1) if m else ""


def pick_tensorrt(found: Mapping[str, str]) -> TensorRTInstall | None:
    """The install that `found` (distribution name -> version) describes: versioned names
    with a CUDA major first (they say both), then the bare `tensorrt`."""
    named = {_norm(k): v for k, v in found.items() if v and _is_tensorrt(k)}
    if not named:
        return None
    best = sorted(named, key=lambda n: (cuda_flavour(n) == "", n.endswith("-libs"), n))[0]
    flavour = cuda_flavour(best) or next((cuda_flavour(n) for n in named if cuda_flavour(n)), "")
    return TensorRTInstall(named[best], best, flavour)


def _is_tensorrt(name: str) -> bool:
    n = _norm(name)
    return n in ("tensorrt", "tensorrt-bindings", "tensorrt-libs") or bool(cuda_flavour(n))


def find_tensorrt(path: list[str] | None = None) -> TensorRTInstall | None:
    """The TensorRT installed on `path` (default sys.path), from package metadata."""
    dists = (
        importlib.metadata.distributions(path=path) if path else importlib.metadata.distributions()
    )
    found = {
        d.metadata["Name"]: d.version
        for d in dists
        if d.metadata["Name"] and _is_tensorrt(d.metadata["Name"])
    }
    return pick_tensorrt(found)


def cudart_wheel_dir(cuda: str, path: Iterable[str] | None = None) -> Path | None:
    """The folder holding `libcudart.so.<major>` from the pip wheel TensorRT installs for
    `cuda` ("cu12", "cu13"): `nvidia/cuda_runtime/lib` (nvidia-cuda-runtime-cu12) or
    `nvidia/cu13/lib` (CUDA 13 wheels share one folder); None when no such wheel is on `path`
    (default sys.path)."""
    m = re.fullmatch(r"cu(\d+)", cuda)
    if m is None:
        return None
    major = m.group(1)
    for entry in path if path is not None else sys.path:
        for sub in (f"nvidia/cu{major}/lib", "nvidia/cuda_runtime/lib"):
            d = Path(entry or ".") / sub
            if (d / f"libcudart.so.{major}").is_file():
                return d
    return None


def expose_cudart(
    cuda: str, environ: MutableMapping[str, str] | None = None, path: Iterable[str] | None = None
) -> Path | None:
    """Put the pip wheel's CUDA runtime folder first on LD_LIBRARY_PATH in `environ` (default:
    this process's), where Polygraphy's CUDA wrapper looks for `libcudart.so*` by path: it
    knows the CUDA 12 wheel's folder only from 0.53.4 and CUDA 13's not at all, and without
    one finds no runtime on a host without a CUDA toolkit. Only this process's later searches
    change (the dynamic loader read the variable at start-up). Returns the folder added."""
    env = os.environ if environ is None else environ
    d = cudart_wheel_dir(cuda, path)
    if d is None:
        return None
    have = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if str(d) not in have:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(d), *have])
    return d
