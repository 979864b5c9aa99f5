"""reports/report.html (issue 17, item 4): written beside report.md, listed and hashed in the
manifest, self-contained (no script, stylesheet, image or link fetched at view time), with the
manifest's figures in its tables and a picture per section; rendered by headless Chromium into
a screenshot that is not blank where Chromium is installed."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from compiler.packaging.report_charts import charts_available
from compiler.serving.integrity import check_package
from compiler.serving.manifest import Manifest, read_manifest
from tests.compiler.helpers import build
from tests.fresh import stdout_words
from tests.models import save, tiny_cnn

VARIANTS = {
    "targets": {
        "cpu": {
            "variants": {
                "ort-fp32": {"compile": {"backend": "onnxruntime"}},
                "ort-basic": {
                    "compile": {"backend": "onnxruntime", "graph_optimization_level": "basic"}
                },
            }
        }
    }
}


class _Page(HTMLParser):
    """Tables as lists of rows of cell texts; every tag and attribute seen."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("html")
    build(save(tiny_cnn(), root / "cnn.onnx"), root / "pkg", None, ("cpu", "arm"), raw=VARIANTS)
    return root / "pkg"


def parse(package: Path) -> tuple[str, _Page]:
    text = (package / "reports" / "report.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    page.close()
    return text, page


def rows_by_first_cell(page: _Page, header: str) -> dict[str, dict[str, str]]:
    """The table whose first header cell is `header`, as {first cell: {column: cell}}."""
    for table in page.tables:
        if table and table[0] and table[0][0] == header and len(table[0]) > 3:
            head = table[0]
            return {r[0]: dict(zip(head, r, strict=True)) for r in table[1:]}
    raise AssertionError(f"no table starting with {header!r}")


def test_report_html_is_listed_and_hashed_in_the_manifest(package: Path) -> None:
    m = read_manifest(package)
    entry = next(f for f in m.reports if f.path == "reports/report.html")
    data = (package / entry.path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry.sha256 and len(data) == entry.size
    assert check_package(package, m).ok


def test_report_html_is_self_contained(package: Path) -> None:
    text, page = parse(package)
    assert not [t for t, _ in page.tags if t in ("script", "link", "img", "iframe", "object")]
    fetching = [
        (t, k, v)
        for t, attrs in page.tags
        for k, v in attrs.items()
        if k in ("src", "href", "xlink:href", "data") and v and not v.startswith("#")
    ]
    assert fetching == []
    urls = re.findall(r"[\w:-]*=?[\"']?(?:https?:)?//[^\s\"'<>)]+", text)
    namespaces = [u for u in urls if u.startswith(("xmlns", "xmlns:"))]
    assert urls == namespaces, set(urls) - set(namespaces)  # only XML namespace names
    assert "url(http" not in text and "@import" not in text


def _latest(m: Manifest, aid: str) -> tuple[float, float] | None:
    timed = [r.artifact for r in m.measurements[aid].latency if r.artifact]
    return (timed[-1].p50_ms, timed[-1].p99_ms) if timed else None


def test_report_html_tables_hold_the_manifest_figures(package: Path) -> None:
    m = read_manifest(package)
    _, page = parse(package)
    artifacts = rows_by_first_cell(page, "artifact")
    assert set(artifacts) == {a.id for a in m.artifacts}
    for a in m.artifacts:
        row = artifacts[a.id]
        assert (row["backend"], row["status"], row["precision"]) == (
            a.backend,
            a.status,
            a.precision,
        )
        lat = _latest(m, a.id)
        if lat is not None:
            assert (row["p50 ms"], row["p99 ms"]) == (f"{lat[0]:.3f}", f"{lat[1]:.3f}")
        else:
            assert row["p50 ms"] == "-"
    parity = [t for t in page.tables if t[0][:2] == ["artifact", "output"]][0]
    for aid, recs in m.measurements.items():
        outputs = [r for r in recs.parity if r.outputs][-1].outputs
        for name, o in outputs.items():
            row = next(r for r in parity[1:] if r[:2] == [aid, name])
            assert row[4] == f"{o.max_abs_err:.2e}" and row[7] == f"{o.cosine:.6f}"
    nodes = [t for t in page.tables if t[0] == ["node", "status", "seconds"]][0]
    assert [r[:2] for r in nodes[1:]] == [[n.node, n.status] for n in m.build.nodes]
    contract = [t for t in page.tables if t[0][:2] == ["io", "name"]][0]
    assert [r[1] for r in contract[1:]] == [
        t.name for t in [*m.contract.inputs, *m.contract.outputs]
    ]


def test_report_html_draws_a_picture_per_section(package: Path) -> None:
    if not charts_available():
        pytest.skip("matplotlib is not installed: report.html has tables only")
    text, page = parse(package)
    assert sum(1 for t, _ in page.tags if t == "svg") == 4  # DAG, latency, parity, timeline
    dag = text.split("<h2>Pass DAG</h2>")[1].split("<h2>")[0]
    assert "cpu/ort-basic:compile" in dag and "normalize" in dag  # node labels stay text


def test_headless_chromium_renders_a_page_that_is_not_blank(package: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium here (Debian: apt-get install chromium)")
    from PIL import Image

    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
         "--window-size=1200,2400", (package / "reports" / "report.html").as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 2400)
    histogram = image.histogram()
    inked = sum(histogram[:200]) / (image.size[0] * image.size[1])  # darker than near-white
    assert inked > 0.01, inked  # text, table rules and bars, not an empty page
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 16) or []
    assert len(colours) > 50  # pictures and coloured status text, not one flat colour


def test_the_reports_imports_are_warmed_on_a_thread_of_their_own() -> None:
    """build_package starts the report's matplotlib import while its nodes run, so the
    report does not wait for it: the thread imports it and ends; nothing else is loaded."""
    pytest.importorskip("matplotlib")
    code = (
        "import sys\n"
        "from compiler.packaging.report_charts import warm_imports\n"
        "assert 'matplotlib' not in sys.modules\n"
        "t = warm_imports()\n"
        "t.join(120)\n"
        "print(t.name, t.is_alive(), 'matplotlib.figure' in sys.modules)\n"
    )
    out = stdout_words(code)
    assert out == ["compile-pkg-warm-imports", "False", "True"]
