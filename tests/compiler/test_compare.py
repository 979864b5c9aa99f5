"""compare: real packages of the tiny example lined up by artifact id, and the release gate
(`--max-regression`): an artifact lost, parity lost, or slower beyond the allowance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.core.errors import PackageError
from compiler.packaging.compare import (
    Cells,
    CompareRow,
    compare_markdown,
    compare_packages,
    compare_table,
    find_regressions,
)
from tests.compiler.helpers import ORT_ONLY, build, example_sample_data

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny_cnn.onnx"
INT8 = {"passes": [{"name": "quantize"}], "compile": {"backend": "onnxruntime"}}


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """a: fp32 only; b: fp32 and int8 judged leniently (passes); c: the same judged by an
    impossible tolerance (fails)."""
    root = tmp_path_factory.mktemp("compare")
    variants = {**ORT_ONLY["cpu"]["variants"], "ort-int8": INT8}
    int8 = {"targets": {"cpu": {"variants": variants}}}
    build(EXAMPLE, root / "a", None, targets=("cpu",))
    lenient = ["parity.tolerances.int8.min_cosine=0.5", "parity.tolerances.int8.min_top1=0"]
    data = example_sample_data(root / "data")  # real-looking inputs: int8 gets a verdict
    build(
        EXAMPLE, root / "b", None, targets=("cpu",), raw=int8, overrides=lenient, sample_data=data
    )
    strict = ["parity.tolerances.int8.atol=0", "parity.tolerances.int8.rtol=0"]  # any error fails
    build(EXAMPLE, root / "c", None, targets=("cpu",), raw=int8, overrides=strict, sample_data=data)
    return root / "a", root / "b", root / "c"


def test_rows_line_up_artifacts_of_both(packages: tuple[Path, Path, Path]) -> None:
    report = compare_packages(packages[0], packages[1])
    by_id = {r.artifact: r for r in report.rows}
    assert set(by_id) == {"cpu/ort-fp32", "cpu/ort-int8"}
    assert by_id["cpu/ort-int8"].a == Cells(status="absent")
    assert by_id["cpu/ort-int8"].b.precision == "int8"
    fp32 = by_id["cpu/ort-fp32"]
    assert fp32.a.parity == fp32.b.parity == "passed"
    assert fp32.p50_ratio is not None and not fp32.hosts_differ  # same host: a ratio
    assert report.same_source and report.regressions == []  # no gate asked for


def test_table_and_markdown_render(packages: tuple[Path, Path, Path]) -> None:
    report = compare_packages(packages[0], packages[1])
    table = compare_table(report)
    assert [c.header for c in table.columns][:3] == ["artifact", "status", "precision"]
    assert table.row_count == 2
    md = compare_markdown(report)
    assert "| cpu/ort-int8 | absent | built |" in md and "same source model" in md


def test_not_a_package_is_a_clear_error(tmp_path: Path, packages: tuple[Path, Path, Path]) -> None:
    with pytest.raises(PackageError, match="not a package"):
        compare_packages(tmp_path, packages[0])


def test_gate_finds_a_lost_artifact_and_lost_parity(packages: tuple[Path, Path, Path]) -> None:
    _, b, c = packages
    lost = compare_packages(b, packages[0], max_slowdown=10.0)
    assert [(r.artifact, r.what) for r in lost.regressions] == [("cpu/ort-int8", "missing")]
    worse = compare_packages(b, c, max_slowdown=10.0)
    assert [(r.artifact, r.what) for r in worse.regressions] == [("cpu/ort-int8", "parity")]
    assert "parity passed in A, failed in B" in worse.regressions[0].detail


def test_gate_on_latency_uses_the_allowance() -> None:
    def row(a_ms: float, b_ms: float) -> CompareRow:
        a = Cells(status="built", parity="passed", p50_ms=a_ms, host="x86_64 cpu x2")
        b = a.model_copy(update={"p50_ms": b_ms})
        return CompareRow(artifact="cpu/x", a=a, b=b, p50_ratio=b_ms / a_ms)

    assert find_regressions([row(1.0, 1.09)], max_slowdown=0.10) == []
    slower = find_regressions([row(1.0, 1.25)], max_slowdown=0.10)
    assert [r.what for r in slower] == ["latency"] and "1.25x, allowed 1.10x" in slower[0].detail
    other_host = CompareRow(
        artifact="cpu/x",
        a=Cells(status="built", p50_ms=1.0, host="a"),
        b=Cells(status="built", p50_ms=9.0, host="b"),
        hosts_differ=True,
    )
    assert find_regressions([other_host], max_slowdown=0.10) == []  # not comparable


def test_cli_gate_exit_codes_and_json(
    packages: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, _ = packages
    main(["compare", str(b), str(b), "--max-regression", "900%", "--json"])  # returns: exit 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["command"] == "compare" and doc["schema_version"] == 1
    assert doc["regressions"] == [] and doc["max_slowdown"] == 9.0
    # a latency allowance no timing noise reaches: the gate here is the artifact B lost (two
    # builds of a tiny model on a busy host differ by more than 10 % in p50)
    with pytest.raises(SystemExit) as lost:
        main(["compare", str(b), str(a), "--max-regression", "900%"])
    err = capsys.readouterr().err
    assert lost.value.code == 1
    assert "regression: cpu/ort-int8: built in A, absent in B" in err
    with pytest.raises(SystemExit) as gated:
        main(["compare", str(b), str(a), "--max-regression", "900%", "--json"])
    assert gated.value.code == 1
    doc = json.loads(capsys.readouterr().out)  # one document: the comparison, regressions named
    assert [r["artifact"] for r in doc["regressions"]] == ["cpu/ort-int8"]
