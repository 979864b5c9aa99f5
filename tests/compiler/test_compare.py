"""compare: two real packages of the tiny example, lined up by artifact id."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.core.errors import PackageError
from compiler.packaging.compare import compare_markdown, compare_packages, compare_rows
from tests.compiler.helpers import ORT_ONLY, build

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny_cnn.onnx"


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("compare")
    variants = dict(ORT_ONLY["cpu"]["variants"])
    variants["ort-int8"] = {
        "passes": [{"name": "quantize"}],
        "compile": {"backend": "onnxruntime"},
    }
    int8 = {"targets": {"cpu": {"variants": variants}}}
    build(EXAMPLE, root / "a", None, targets=("cpu",))
    build(EXAMPLE, root / "b", None, targets=("cpu",), raw=int8)
    return root / "a", root / "b"


def test_rows_line_up_artifacts_of_both(packages: tuple[Path, Path]) -> None:
    _, _, rows = compare_rows(*packages)
    by_id = {r.artifact: r for r in rows}
    assert set(by_id) == {"cpu/ort-fp32", "cpu/ort-int8"}
    assert by_id["cpu/ort-int8"].a == {"status": "absent"}
    assert by_id["cpu/ort-int8"].b["precision"] == "int8"
    fp32 = by_id["cpu/ort-fp32"]
    assert fp32.a["parity"] == fp32.b["parity"] == "passed"
    assert fp32.p50_ratio.endswith("x")  # same host: a ratio, not "hosts differ"


def test_table_and_markdown_render(packages: tuple[Path, Path]) -> None:
    table = compare_packages(*packages)
    assert [c.header for c in table.columns][:3] == ["artifact", "status", "precision"]
    assert table.row_count == 2
    md = compare_markdown(*packages)
    assert "| cpu/ort-int8 | absent | built |" in md and "same source model" in md


def test_not_a_package_is_a_clear_error(tmp_path: Path, packages: tuple[Path, Path]) -> None:
    with pytest.raises(PackageError, match="not a package"):
        compare_rows(tmp_path, packages[0])
