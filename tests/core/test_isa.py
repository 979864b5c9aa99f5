"""ISA classes from CPU flags, what each runs natively, and the class a host record carries.

Hosts are described by their /proc/cpuinfo flags: nothing here depends on this machine's CPU.
"""

from __future__ import annotations

import pytest

from compiler.core.host import HostInfo, Requirements
from compiler.core.isa import (
    BF16_FLAGS,
    CLASSES_BY_ARCH,
    ISA_CLASSES,
    int8_fit,
    isa_class,
    meant_for,
    traits,
)
from compiler.core.records import LatencyRecord, MeasuredOn

AVX2 = ["avx", "avx2", "f16c", "fma", "sse4_2"]
AVX512 = [*AVX2, "avx512bw", "avx512f", "avx512vl"]
VNNI = [*AVX512, "avx512_vnni"]
BF16 = [*VNNI, "avx512_bf16"]
AMX = [*BF16, "amx_bf16", "amx_int8", "amx_tile"]


@pytest.mark.parametrize(
    ("arch", "flags", "cls"),
    [
        ("x86_64", ["sse4_2"], "x86-64"),
        ("x86_64", AVX2, "avx2"),
        ("x86_64", [*AVX2, "avx_vnni"], "avx-vnni"),
        ("x86_64", AVX512, "avx512"),
        ("x86_64", VNNI, "avx512-vnni"),
        ("x86_64", BF16, "avx512-bf16"),
        # the development host: AVX-VNNI and AVX-512 VNNI/BF16, no AMX
        ("x86_64", [*BF16, "avx_vnni"], "avx512-bf16"),
        ("x86_64", AMX, "amx"),
        ("x86_64", ["amx_tile", "amx_int8"], "amx"),  # AMX whatever else a VM shows
        ("x86_64", ["amx_tile"], "x86-64"),  # tiles without int8 or bf16 units: not AMX
        ("aarch64", ["asimd"], "neon"),
        ("aarch64", ["asimd", "asimddp"], "dotprod"),  # Neoverse N1 (Graviton2)
        ("aarch64", ["asimd", "asimddp", "i8mm", "bf16"], "i8mm"),  # no SVE (Apple M2)
        ("aarch64", ["asimd", "asimddp", "i8mm", "sve"], "sve"),
        ("aarch64", ["asimd", "asimddp", "i8mm", "sve", "sve2", "bf16"], "bf16"),  # Graviton3/4
        ("riscv64", ["avx2"], "other"),
    ],
)
def test_a_host_class_is_derived_from_its_flags(arch: str, flags: list[str], cls: str) -> None:
    assert isa_class(arch, flags) == cls


def test_classes_are_listed_per_arch_oldest_first() -> None:
    assert CLASSES_BY_ARCH["x86_64"][0] == "x86-64" and CLASSES_BY_ARCH["x86_64"][-1] == "amx"
    assert set(ISA_CLASSES) == {c for cs in CLASSES_BY_ARCH.values() for c in cs} | {"other"}


@pytest.mark.parametrize(
    ("cls", "fits"),
    [
        # VPMADDUBSW saturates 16-bit sums without VNNI: 7-bit weights are meant for these
        ("avx2", {"u8s8": "saturates", "s8s8": "saturates", "u8s8-rr": "preferred"}),
        ("avx512", {"u8s8": "saturates", "u8u8": "native", "u8s8-rr": "preferred"}),
        ("avx512-vnni", {"u8s8": "preferred", "s8s8": "preferred", "u8s8-rr": "native"}),
        ("amx", {"u8s8": "preferred", "u8s8-rr": "native", "u8u8": "native"}),
        # ONNX Runtime fuses signed int8 QDQ into its int8 kernels on Arm only
        ("dotprod", {"s8s8": "preferred", "u8s8": "native", "u8s8-rr": "native"}),
    ],
)
def test_which_int8_flavour_runs_natively_on_a_class(cls: str, fits: dict[str, str]) -> None:
    assert {f: int8_fit(f, cls) for f in fits} == fits  # type: ignore[arg-type]


def test_bf16_is_native_only_with_avx512_bf16_or_amx() -> None:
    assert [c for c in CLASSES_BY_ARCH["x86_64"] if traits(c).bf16] == ["avx512-bf16", "amx"]
    assert meant_for("x86_64", bf16=True) == ["avx512-bf16", "amx"]


def test_meant_for_names_the_classes_whose_preferred_flavour_it_is() -> None:
    assert meant_for("x86_64", int8="u8s8-rr") == ["x86-64", "avx2", "avx512"]
    assert meant_for("x86_64", int8="u8s8") == ["avx-vnni", "avx512-vnni", "avx512-bf16", "amx"]
    assert meant_for("aarch64", int8="s8s8") == list(CLASSES_BY_ARCH["aarch64"])
    assert meant_for("x86_64") == []  # full precision: every class


def _host(flags: list[str], arch: str = "x86_64") -> HostInfo:
    return HostInfo(arch=arch, cpu_model="x", cpu_count=2, isa=flags, os="Linux")


def test_a_record_carries_its_hosts_class_and_recomputes_it_on_read() -> None:
    host = MeasuredOn(**_host(AVX2).model_dump(), measured_at="2026-11-30T00:00:00Z")
    rec = LatencyRecord(host=host, batch=1, input_shapes={})
    doc = rec.model_dump(mode="json")
    assert doc["host"]["isa_class"] == "avx2"
    # an older record has no isa_class; one written by another classification is recomputed
    del doc["host"]["isa_class"]
    assert LatencyRecord.model_validate(doc).host.isa_class == "avx2"
    doc["host"]["isa_class"] = "amx"
    assert LatencyRecord.model_validate(doc).host.isa_class == "avx2"
    assert "(avx2)" in host.describe()


def test_a_bf16_requirement_is_met_by_either_native_bf16_flag() -> None:
    req = Requirements(
        arch="x86_64",
        isa=["avx512bw", "avx512f", "avx512vl"],
        isa_any=list(BF16_FLAGS["x86_64"]),
        runtime="openvino",
    )
    runs = {"openvino": "2026.4"}
    vnni = _host(VNNI).model_copy(update={"runtimes": runs})
    why = req.mismatches(vnni)
    assert [m.kind for m in why] == ["isa"] and "one of the CPU features" in why[0].message
    assert req.mismatches(_host(BF16).model_copy(update={"runtimes": runs})) == []
    amx_only = [*AVX512, "amx_tile", "amx_bf16"]  # a VM that hides avx512_bf16
    assert req.mismatches(_host(amx_only).model_copy(update={"runtimes": runs})) == []
