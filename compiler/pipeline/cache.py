"""Content-addressed cache of DAG node outputs.

An entry is a folder `<root>/<key[:2]>/<key>/` holding `out/` (the node's files) and
`node.json` (its record). Entries are built in a temporary folder beside the root and
renamed into place, so a crash or kill never leaves a half-written entry under a key.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["Cache", "default_cache_dir"]


def default_cache_dir() -> Path:
    env = os.environ.get("COMPILE_PKG_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "compile-pkg"


class Cache:
    def __init__(self, root: Path, enabled: bool = True) -> None:
        # absolute: backends run workers in other folders (TVM builds in a child process)
        self.root = Path(root).absolute()
        self.enabled = enabled

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> tuple[Path, dict[str, Any]] | None:
        if not self.enabled:
            return None
        entry = self._entry(key)
        try:
            meta = json.loads((entry / "node.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return entry / "out", meta

    def new_entry(self) -> Path:
        """A scratch folder with an empty `out/`, on the same filesystem as the cache."""
        tmp_root = self.root / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        d = Path(tempfile.mkdtemp(prefix="node-", dir=tmp_root))
        (d / "out").mkdir()
        return d

    def commit(self, key: str, scratch: Path, record: dict[str, Any]) -> Path:
        """Write node.json and move the scratch folder into place atomically; return `out/`."""
        (scratch / "node.json").write_text(
            json.dumps(record, sort_keys=True, indent=1, allow_nan=True), encoding="utf-8"
        )
        entry = self._entry(key)
        if not self.enabled:
            return scratch / "out"
        entry.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(scratch, entry)
        except OSError:  # another process committed the same key first: theirs is as good
            shutil.rmtree(scratch, ignore_errors=True)
        return entry / "out"

    def evict(self, key: str) -> None:
        """Remove the entry under `key` (one that cannot be read any more)."""
        shutil.rmtree(self._entry(key), ignore_errors=True)

    def discard(self, scratch: Path) -> None:
        shutil.rmtree(scratch, ignore_errors=True)

    def clear_scratch(self) -> None:
        """Remove every scratch folder (left behind by a crash, or by the run just ended)."""
        shutil.rmtree(self.root / "tmp", ignore_errors=True)
