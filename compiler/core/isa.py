"""ISA classes: the CPU feature sets that change which low-precision artifact runs best.

A host's class is derived from its CPU flags (`isa_class`), never declared, so a record read
back computes it the same way it was computed when written, old records included. What a
class runs natively decides which int8 flavour and whether bf16 is worth serving there:

- x86-64 without VNNI (`x86-64`, `avx2`, `avx512`): ONNX Runtime's u8 x s8 int8 GEMM uses
  VPMADDUBSW, whose 16-bit intermediate sums saturate; ONNX Runtime's guide recommends
  `reduce_range` (7-bit weights) there, and says it is not needed with VNNI
  (https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html, "When to
  use reduce-range and per-channel quantization?" and "Data type selection"). oneDNN (and so
  OpenVINO's CPU plugin) has the same limit, which NNCF's `overflow_fix` addresses.
- x86-64 with VNNI or AMX: u8s8 and s8s8 (ONNX Runtime turns s8 activations into u8) run at
  full range; S8S8 QDQ is ONNX Runtime's stated first choice.
- aarch64: no saturation issue (same guide); ONNX Runtime fuses signed int8 QDQ into its int8
  kernels only on Arm (`QDQIsInt8Allowed()` in its QDQ selector-action transformer), so s8s8
  is the flavour meant for every aarch64 class.
- bf16 runs natively only with AVX512_BF16 or AMX-BF16 (aarch64: the `bf16` feature).
  OpenVINO's CPU plugin accepts a bf16 inference precision on any AVX-512 core and then
  emulates it, "significant performance degradation in comparison with FP32"
  (https://docs.openvino.ai/2021.4/openvino_docs_IE_DG_Bfloat16Inference.html), so bf16
  artifacts require the native flags (`BF16_FLAGS`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BF16_FLAGS",
    "CLASSES_BY_ARCH",
    "ISA_CLASSES",
    "Int8Fit",
    "Int8Flavour",
    "IsaClass",
    "ClassTraits",
    "int8_fit",
    "isa_class",
    "meant_for",
    "traits",
]

IsaClass = Literal[
    "x86-64",
    "avx2",
    "avx-vnni",
    "avx512",
    "avx512-vnni",
    "avx512-bf16",
    "amx",
    "neon",
    "dotprod",
    "i8mm",
    "sve",
    "bf16",
    "other",
]
# per architecture, oldest first: a class later in its tuple runs at least as much natively
CLASSES_BY_ARCH: dict[str, tuple[IsaClass, ...]] = {
    "x86_64": ("x86-64", "avx2", "avx-vnni", "avx512", "avx512-vnni", "avx512-bf16", "amx"),
    "aarch64": ("neon", "dotprod", "i8mm", "sve", "bf16"),
}
ISA_CLASSES: tuple[IsaClass, ...] = (
    *CLASSES_BY_ARCH["x86_64"],
    *CLASSES_BY_ARCH["aarch64"],
    "other",
)

# u8s8: uint8 activations, int8 weights; -rr: 7-bit weights (ONNX Runtime's reduce_range)
Int8Flavour = Literal["u8s8", "s8s8", "u8u8", "u8s8-rr", "s8s8-rr"]
# preferred: the flavour this class is meant to run; native: runs at full speed without
# saturation but another flavour is the better fit; saturates: may clamp intermediate sums
Int8Fit = Literal["preferred", "native", "saturates"]

# CPU flags of native bf16 arithmetic, any one of which is enough
BF16_FLAGS: dict[str, tuple[str, ...]] = {
    "x86_64": ("amx_bf16", "avx512_bf16"),
    "aarch64": ("bf16",),
}
_AVX512 = {"avx512f", "avx512bw", "avx512vl"}


def _x86_class(f: set[str]) -> IsaClass:
    if "amx_tile" in f and f & {"amx_int8", "amx_bf16"}:
        return "amx"
    if _AVX512 <= f:
        if "avx512_vnni" in f:
            return "avx512-bf16" if "avx512_bf16" in f else "avx512-vnni"
        return "avx512"
    if "avx2" in f:
        return "avx-vnni" if "avx_vnni" in f else "avx2"
    return "x86-64"


def _arm_class(f: set[str]) -> IsaClass:
    if "asimddp" not in f:
        return "neon"
    if "i8mm" not in f:
        return "dotprod"
    if "sve" not in f:
        return "i8mm"
    return "bf16" if "bf16" in f else "sve"


def isa_class(arch: str, flags: Iterable[str]) -> IsaClass:
    """The class of a CPU with these flags (/proc/cpuinfo names)."""
    f = set(flags)
    if arch == "x86_64":
        return _x86_class(f)
    if arch == "aarch64":
        return _arm_class(f)
    return "other"


@dataclass(frozen=True)
class ClassTraits:
    """What a class runs natively."""

    int8_dot: bool  # int8 dot products accumulate in 32 bits (VNNI, AMX, dotprod): int8 pays
    preferred: tuple[Int8Flavour, ...]  # the int8 flavours meant for it, best first
    saturating: tuple[Int8Flavour, ...]  # flavours whose intermediate sums may saturate
    bf16: bool  # bf16 arithmetic in hardware


_X86_FULL: tuple[Int8Flavour, ...] = ("u8s8", "s8s8")
_X86_RR: tuple[Int8Flavour, ...] = ("u8s8-rr", "s8s8-rr")
_X86_VNNI = ClassTraits(int8_dot=True, preferred=_X86_FULL, saturating=(), bf16=False)
_X86_OLD = ClassTraits(int8_dot=False, preferred=_X86_RR, saturating=_X86_FULL, bf16=False)
_ARM = ClassTraits(int8_dot=True, preferred=("s8s8",), saturating=(), bf16=False)
_TRAITS: dict[IsaClass, ClassTraits] = {
    "x86-64": _X86_OLD,
    "avx2": _X86_OLD,
    "avx512": _X86_OLD,
    "avx-vnni": _X86_VNNI,
    "avx512-vnni": _X86_VNNI,
    "avx512-bf16": ClassTraits(True, _X86_FULL, (), bf16=True),
    "amx": ClassTraits(True, _X86_FULL, (), bf16=True),
    "neon": ClassTraits(False, ("s8s8",), (), bf16=False),
    "dotprod": _ARM,
    "i8mm": _ARM,
    "sve": _ARM,
    "bf16": ClassTraits(True, ("s8s8",), (), bf16=True),
    "other": ClassTraits(False, (), (), bf16=False),
}


def traits(cls: IsaClass) -> ClassTraits:
    return _TRAITS[cls]


def int8_fit(flavour: Int8Flavour, cls: IsaClass) -> Int8Fit:
    """How an int8 artifact of `flavour` runs on a host of class `cls`."""
    t = _TRAITS[cls]
    if flavour in t.preferred:
        return "preferred"
    return "saturates" if flavour in t.saturating else "native"


def meant_for(arch: str, *, int8: Int8Flavour | None = None, bf16: bool = False) -> list[IsaClass]:
    """The classes of `arch` an artifact is built for (empty: every class): those whose
    preferred int8 flavour it has, or that run bf16 natively. Not a hard requirement: an
    AVX2-safe int8 artifact runs on a VNNI host too, just not as its best fit."""
    classes = CLASSES_BY_ARCH.get(arch, ())
    if int8 is not None:
        return [c for c in classes if int8_fit(int8, c) == "preferred"]
    if bf16:
        return [c for c in classes if _TRAITS[c].bf16]
    return []
