"""Content digests: files, folders and JSON-able objects, the same on every host."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["canonical_json", "dir_digest", "file_sha256", "sha256_json"]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dir_digest(path: Path) -> str:
    """sha256 over every file under `path` (relative names and contents), in sorted order."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace: the form every digest of a JSON-able object is taken over."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True
    )


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()
