"""Helpers for the serving tests: edit a package as an attacker would (core recomputed)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compiler.serving.manifest import document_core_digest, document_records_digest


def read_doc(pkg: Path) -> dict[str, Any]:
    return json.loads((pkg / "manifest.json").read_text())


def write_doc(pkg: Path, doc: dict[str, Any], *, recompute_core: bool = True) -> None:
    """Write `doc` as the manifest; with `recompute_core`, as an attacker who knows the format
    (both digests recomputed)."""
    if recompute_core:
        doc["core_sha256"] = document_core_digest(doc)
        doc["records_sha256"] = document_records_digest(doc)
    (pkg / "manifest.json").write_text(json.dumps(doc, indent=1))


def edit_doc(pkg: Path, change: Callable[[dict[str, Any]], None], **kw: bool) -> None:
    doc = read_doc(pkg)
    change(doc)
    write_doc(pkg, doc, **kw)


def artifact(doc: dict[str, Any], aid: str) -> dict[str, Any]:
    return next(a for a in doc["artifacts"] if a["id"] == aid)


def file_entry(path: Path, rel: str) -> dict[str, Any]:
    data = path.read_bytes()
    return {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
