"""Serving matches its host's ISA class: a package built on one class, loaded on hosts of
other classes (described as HostInfo records, as the probe would report them).

The package is real (ONNX Runtime fp32, int8 u8s8 and int8 u8s8-rr, built here); its latency
records are then stamped as measured on an AVX-512 BF16 host, so what each simulated host
picks does not depend on the CPU that runs the test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import onnxruntime
import pytest

from compiler.core.host import HostInfo
from compiler.serving.loader import load
from compiler.serving.manifest import manifest_json, read_manifest
from compiler.serving.selection import Candidate, rank, select_order
from tests.compiler.helpers import build
from tests.core.test_isa import AMX, AVX2, BF16, VNNI
from tests.models import save, tiny_mlp

ORT = {"backend": "onnxruntime"}
INT8 = {"name": "quantize", "accuracy_aware": {"enabled": False}}
VARIANTS = {
    "targets": {
        "cpu": {
            "variants": {
                "ort-fp32": {"compile": ORT},
                "ort-int8": {"passes": [INT8], "compile": ORT},
                "ort-int8-rr": {"passes": [{**INT8, "reduce_range": True}], "compile": ORT},
            }
        },
        "arm": {"variants": {"ort-int8": {"passes": [INT8], "compile": ORT}}},
    }
}
DATA = Path(__file__).parents[1] / "compiler" / "data"


def _host(flags: list[str]) -> HostInfo:
    return HostInfo(
        arch="x86_64",
        cpu_model="described",
        cpu_count=2,
        isa=flags,
        os="Linux",
        runtimes={"onnxruntime": onnxruntime.__version__},
    )


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once; its latency records re-stamped as taken on an avx512-bf16 host."""
    root = tmp_path_factory.mktemp("classes")
    model = save(tiny_mlp(), root / "mlp.onnx")
    build(model, root / "pkg", None, targets=("cpu", "arm"), raw=VARIANTS)
    m = read_manifest(root / "pkg")
    for measured in m.measurements.values():
        for rec in measured.latency:
            rec.host = rec.host.model_copy(update={"isa": BF16})
    (root / "pkg" / "manifest.json").write_text(manifest_json(m))
    return root / "pkg"


def test_each_int8_artifact_records_its_flavour_and_the_classes_it_is_meant_for(
    package: Path,
) -> None:
    m = read_manifest(package)
    req = {a.id: a.requirements for a in m.artifacts}
    assert {k: (r.int8 if r else None) for k, r in req.items()} == {
        "cpu/ort-fp32": None,
        "cpu/ort-int8": "u8s8",
        "cpu/ort-int8-rr": "u8s8-rr",
        "arm/ort-int8": "s8s8",  # ONNX Runtime's int8 kernels on Arm take signed QDQ
    }
    assert req["cpu/ort-int8-rr"].meant_for == ["x86-64", "avx2", "avx512"]  # type: ignore[union-attr]
    assert "amx" in req["cpu/ort-int8"].meant_for  # type: ignore[union-attr]
    assert req["cpu/ort-fp32"].meant_for == []  # type: ignore[union-attr]
    hosts = {r.host.isa_class for v in m.measurements.values() for r in v.latency}
    assert hosts == {"avx512-bf16"}


@pytest.mark.parametrize(
    ("flags", "cls", "picked", "order", "why"),
    [
        (
            AVX2,
            "avx2",
            "cpu/ort-fp32",
            ["cpu/ort-fp32", "cpu/ort-int8-rr", "cpu/ort-int8"],
            "full precision (avx2 has no int8 dot products: int8 unproven)",
        ),
        (
            VNNI,
            "avx512-vnni",
            "cpu/ort-int8",
            ["cpu/ort-int8", "cpu/ort-int8-rr", "cpu/ort-fp32"],
            "int8 meant for avx512-vnni (u8s8)",
        ),
        (
            AMX,
            "amx",
            "cpu/ort-int8",
            ["cpu/ort-int8", "cpu/ort-int8-rr", "cpu/ort-fp32"],
            "int8 meant for amx (u8s8)",
        ),
    ],
)
def test_a_host_of_another_class_is_served_by_the_class_prior(
    package: Path,
    tmp_path: Path,
    flags: list[str],
    cls: str,
    picked: str,
    order: list[str],
    why: str,
) -> None:
    host = _host(flags)
    assert host.isa_class == cls
    with load(package, host=host, allow_unverified=True, workdir=tmp_path) as session:
        assert session.artifact == picked
        assert f"no latency measured on an {cls} host (measured on avx512-bf16 only)" in (
            session.reason
        )
        assert f"ranked by class prior: {why}" in session.reason
    ranked, _ = rank(read_manifest(package), host, allow_unverified=True)
    # the reference last: nothing measured on this class says the artifacts are slower
    assert [c.id for c in ranked] == [*order, "reference"]


def test_asked_for_int8_an_avx2_host_gets_the_avx2_safe_flavour(
    package: Path, tmp_path: Path
) -> None:
    with load(
        package, host=_host(AVX2), precision="int8", allow_unverified=True, workdir=tmp_path
    ) as session:
        assert session.artifact == "cpu/ort-int8-rr"
        assert "int8 meant for avx2 (u8s8-rr)" in session.reason
    ranked, _ = rank(read_manifest(package), _host(AVX2), allow_unverified=True)
    saturating = next(c for c in ranked if c.id == "cpu/ort-int8")
    assert "int8 (u8s8) may saturate on avx2 (no VNNI): last" in saturating.reason


def test_a_host_of_the_measured_class_ranks_by_its_records(package: Path) -> None:
    """What the build records: on generated data the int8 artifacts have no verdict, so
    only ort-fp32 is in the order, ranked by its record of the host's class."""
    recorded = select_order(read_manifest(package), _host(BF16))
    # and the reference, ahead of ort-fp32 unless its record shows it measurably faster
    why = {c.id: c.why for c in recorded.order}
    assert sorted(why) == ["cpu/ort-fp32", "reference"]
    assert "a host like this: avx512-bf16" in why["cpu/ort-fp32"]
    ahead = "after the reference" not in why["cpu/ort-fp32"]
    assert recorded.order[0].id == ("cpu/ort-fp32" if ahead else "reference")
    assert "(avx512-bf16)" in recorded.host


def test_an_old_manifest_gets_its_records_classes_on_read_and_keeps_them(tmp_path: Path) -> None:
    """A schema-1 package (no isa_class anywhere): the class is computed from each record's
    flags on read, written out on the next write, and reads back the same."""
    shutil.copyfile(DATA / "manifest.v1.json", tmp_path / "manifest.json")
    m = read_manifest(tmp_path)
    hosts = [r.host for v in m.measurements.values() for r in v.latency]
    assert hosts and {h.isa_class for h in hosts} == {"avx512-bf16"}
    assert all(a.requirements is None or a.requirements.meant_for == [] for a in m.artifacts)
    (tmp_path / "manifest.json").write_text(manifest_json(m))
    again = read_manifest(tmp_path)
    assert [r.host.isa_class for v in again.measurements.values() for r in v.latency] == [
        h.isa_class for h in hosts
    ]


def _with_int8_verdicts(package: Path, tmp_path: Path, verdicts: dict[str, list[str]]) -> Path:
    """A copy of `package` whose int8 artifacts' parity records are replaced by one native
    verdict per (status, host flags) named, oldest first."""
    flags = {"avx2": AVX2, "vnni": VNNI}
    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)
    m = read_manifest(copy)
    for aid, taken in verdicts.items():
        measured = m.measurements[aid]
        base = measured.parity[-1]
        on = measured.latency[-1].host
        measured.parity = [
            base.model_copy(
                update={
                    "status": status,
                    "mode": "native",
                    "host": on.model_copy(update={"isa": flags[cls]}),
                }
            )
            for status, cls in (t.split("@") for t in taken)
        ]
    (copy / "manifest.json").write_text(manifest_json(m))
    return copy


def _judged(package: Path, flags: list[str]) -> dict[str, Candidate]:
    """Every artifact as serving judges it on a host with these flags, by id."""
    ranked, excluded = rank(read_manifest(package), _host(flags))
    return {c.id: c for c in [*ranked, *excluded]}


def test_an_int8_verdict_holds_only_where_its_sums_saturate_alike(
    package: Path, tmp_path: Path
) -> None:
    """Full-range u8s8 sums may saturate on AVX2 and not on VNNI: its failure on AVX2 does
    not decide on VNNI, where it is not verified (and so not served); 7-bit weights
    (u8s8-rr) saturate nowhere, so their verdict holds on both."""
    pkg = _with_int8_verdicts(
        package,
        tmp_path,
        {"cpu/ort-int8": ["failed@avx2"], "cpu/ort-int8-rr": ["passed@avx2"]},
    )
    on_vnni = _judged(pkg, VNNI)
    assert not on_vnni["cpu/ort-int8"].ok
    assert on_vnni["cpu/ort-int8"].reason.startswith(
        "parity not verified: its u8s8 int8 sums may saturate on avx2 (no VNNI), not on "
        "avx512-vnni: the failed verdict on avx2 does not hold on avx512-vnni"
    )
    assert on_vnni["cpu/ort-int8-rr"].ok
    assert on_vnni["cpu/ort-int8-rr"].reason.startswith("parity passed")
    on_avx2 = _judged(pkg, AVX2)
    assert on_avx2["cpu/ort-int8"].reason.startswith("parity failed")
    assert on_avx2["cpu/ort-int8-rr"].ok


def test_a_verdict_of_the_hosts_own_class_decides_over_a_later_one_of_another(
    package: Path, tmp_path: Path
) -> None:
    """Passed on a VNNI host (its `verify --update`), failed on an AVX2 one later: each
    class is served by its own verdict, whichever came last."""
    pkg = _with_int8_verdicts(package, tmp_path, {"cpu/ort-int8": ["passed@vnni", "failed@avx2"]})
    on_vnni = _judged(pkg, VNNI)
    assert on_vnni["cpu/ort-int8"].ok
    assert on_vnni["cpu/ort-int8"].reason.startswith("parity passed")
    assert _judged(pkg, AVX2)["cpu/ort-int8"].reason.startswith("parity failed")


def test_a_pass_where_sums_may_saturate_holds_where_they_do_not(
    package: Path, tmp_path: Path
) -> None:
    """u8s8 passed on AVX2: a VNNI host sums exactly what was clamped there, so the pass
    stands on both, unless VNNI has a verdict of its own; passed on VNNI only, an AVX2 host
    has none."""
    pkg = _with_int8_verdicts(package, tmp_path, {"cpu/ort-int8": ["passed@avx2"]})
    assert _judged(pkg, VNNI)["cpu/ort-int8"].reason.startswith("parity passed")
    assert _judged(pkg, AVX2)["cpu/ort-int8"].reason.startswith("parity passed")
    pkg = _with_int8_verdicts(
        package, tmp_path / "own", {"cpu/ort-int8": ["failed@vnni", "passed@avx2"]}
    )
    assert _judged(pkg, VNNI)["cpu/ort-int8"].reason.startswith("parity failed")  # its own
    pkg = _with_int8_verdicts(package, tmp_path / "vnni", {"cpu/ort-int8": ["passed@vnni"]})
    on_avx2 = _judged(pkg, AVX2)["cpu/ort-int8"]
    assert not on_avx2.ok
    assert on_avx2.reason.startswith(
        "parity not verified: its u8s8 int8 sums may saturate on avx2 (no VNNI), not on "
        "avx512-vnni: the passed verdict on avx512-vnni does not hold on avx2"
    )
