"""Hardened parsing (issue 13, item 5): manifests mutated by hypothesis (wrong types, missing and
unknown keys, odd schema versions, deep nesting, with and without a recomputed core) reach
`load()` and `compile-pkg inspect`; every outcome is a session or one of the documented errors,
never an unhandled exception."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from compiler.cli import main
from compiler.core.errors import CompilePkgError
from compiler.core.host import HostInfo, probe_host
from compiler.serving.loader import load
from compiler.serving.manifest import document_core_digest, document_records_digest

LOADS = 1000  # generated manifests through load() per run
INSPECTS = 150

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "../x", "/etc/passwd", "built", "onnxruntime", "tvm", "a" * 64])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
OPS = ("replace", "delete", "unknown-key", "stringify", "deep", "schema_version")


def _mutate(doc: Any, data: st.DataObject) -> None:
    """One mutation at a random place of `doc` (changed in place)."""
    node = doc
    while True:
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if not children:
            break
        key, child = children[data.draw(st.integers(0, len(children) - 1))]
        if not isinstance(child, dict | list) or data.draw(st.integers(0, 3)) == 0:
            break
        node = child
    if not children:
        return
    op = data.draw(st.sampled_from(OPS))
    if op == "schema_version":
        doc["schema_version"] = data.draw(
            st.sampled_from([0, 1, 2, 3, -1, "1", "2", None, True, 2.0, [2]])
        )
    elif op == "delete" and isinstance(node, dict):
        del node[key]
    elif op == "unknown-key" and isinstance(node, dict):
        node[data.draw(st.text(min_size=1, max_size=8))] = data.draw(values)
    elif op == "stringify":
        node[key] = json.dumps(node[key])[:40]
    elif op == "deep":
        node[key] = f"__DEEP_{data.draw(st.sampled_from([40, 70, 900, 5000]))}__"
    else:
        node[key] = data.draw(values)


def _dump(doc: dict[str, Any]) -> str:
    text = json.dumps(doc, allow_nan=True)
    for depth in (40, 70, 900, 5000):
        text = text.replace(f'"__DEEP_{depth}__"', "[" * depth + "1" + "]" * depth)
    return text


@pytest.fixture
def fuzz_pkg(built: Path, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    pkg = Path(shutil.copytree(built, tmp_path / "pkg"))
    return pkg, json.loads((pkg / "manifest.json").read_text())


@pytest.fixture(scope="module")
def host() -> HostInfo:
    return probe_host()


def _write_mutated(pkg: Path, base: dict[str, Any], data: st.DataObject) -> None:
    doc = json.loads(json.dumps(base))
    for _ in range(data.draw(st.integers(1, 3))):
        _mutate(doc, data)
    if data.draw(st.integers(0, 4)) > 0:  # mostly as an attacker who recomputes the digests
        try:
            doc["core_sha256"] = document_core_digest(doc)
            doc["records_sha256"] = document_records_digest(doc)
        except (TypeError, ValueError, RecursionError, AttributeError):
            pass
    (pkg / "manifest.json").write_text(_dump(doc))


@settings(
    max_examples=LOADS,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_manifests_through_load(
    fuzz_pkg: tuple[Path, dict[str, Any]], host: HostInfo, data: st.DataObject
) -> None:
    pkg, base = fuzz_pkg
    _write_mutated(pkg, base, data)
    try:
        load(pkg, host=host, allow_unverified=True).close()
        event("loaded")
    except CompilePkgError as exc:  # a documented error with its exit code
        event(type(exc).__name__)


@settings(
    max_examples=INSPECTS,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_manifests_through_inspect(
    fuzz_pkg: tuple[Path, dict[str, Any]], data: st.DataObject, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg, base = fuzz_pkg
    _write_mutated(pkg, base, data)
    try:
        main(["inspect", str(pkg)])
    except SystemExit as exc:
        assert exc.code != 70, capsys.readouterr().err
    capsys.readouterr()
