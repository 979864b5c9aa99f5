"""Where a package may be written, checked before any work is done.

A build replaces its output folder as a whole (packaging/write.py renames a staging folder into
place), so the folder must be new, empty or a compile-pkg package (`overwrite` replaces any
other folder), and never the current directory, a folder above it, or a folder holding the
build's own inputs (the model, its data, the config, the cache): replacing those would delete
them. The folder it lands in must be writable with room for the package. The package root
gets the mode the umask gives any new folder (the staging folder is made 0700).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from compiler.core.errors import ConfigError

__all__ = [
    "OutputPlan",
    "apply_umask",
    "check_output",
    "estimate_package_bytes",
    "folder_mode",
    "human_bytes",
    "is_package",
]

Replaces = Literal["nothing", "empty folder", "package", "folder"]
_MARGIN = 16 << 20  # reports, reference samples, manifest


@dataclass(frozen=True)
class OutputPlan:
    """A checked output: the resolved path, what writing it replaces, and the existing folder
    the staging folder is made in (the nearest existing ancestor of `path`)."""

    path: Path
    replaces: Replaces
    parent: Path

    def require_free_space(self, needed: int) -> None:
        """Refuse before any work when the filesystem cannot hold about `needed` bytes."""
        free = shutil.disk_usage(self.parent).free
        if free < needed:
            raise ConfigError(
                f"output {self.path}: not enough free space in {self.parent}: the package "
                f"needs about {human_bytes(needed)}, {human_bytes(free)} free; free some space "
                "or write elsewhere with -o"
            )


def human_bytes(n: int | float) -> str:
    """1536 -> '1.5 KiB': sizes as people read them (binary units, one decimal)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # unreachable; for the type checker


def is_package(path: Path) -> bool:
    """Whether `path` holds a compile-pkg package: a manifest.json of ours at its root."""
    try:
        doc = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and {"schema_version", "artifacts", "core_sha256"} <= set(doc)


def estimate_package_bytes(model_bytes: int, artifacts: int) -> int:
    """A generous estimate: each artifact and the reference model about the model's size."""
    return model_bytes * (artifacts + 1) + _MARGIN


def folder_mode() -> int:
    """The mode a new folder gets under the current umask (0o755 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def apply_umask(path: Path) -> None:
    """Give `path` (a folder made 0700 by mkdtemp) the mode the umask gives new folders, so a
    serving process running as another user can read the package."""
    os.chmod(path, folder_mode())


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor)


def _check_protected(out: Path, inputs: Iterable[Path], cwd: Path) -> None:
    why = "a build replaces its output folder as a whole; give a new folder, e.g. -o dist/NAME"
    if out == cwd:
        raise ConfigError(f"output {out} is the current directory: {why}")
    if cwd.is_relative_to(out):
        raise ConfigError(f"output {out} holds the current directory {cwd}: {why}")
    for given in inputs:
        held = given.resolve()
        if held.is_relative_to(out):
            raise ConfigError(f"output {out} holds the build's input {given}: {why}")


def _probe_writable(folder: Path, out: Path) -> None:
    if not folder.is_dir():
        raise ConfigError(f"output {out}: {folder} is not a folder; choose another -o")
    try:
        probe = tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=folder)
    except OSError as exc:
        raise ConfigError(
            f"output {out}: cannot write in {folder} ({exc.strerror or exc}); choose a "
            "writable folder with -o"
        ) from None
    os.rmdir(probe)


def check_output(
    out: Path, *, inputs: Iterable[Path] = (), overwrite: bool = False, cwd: Path | None = None
) -> OutputPlan:
    """Check `out` as a package destination; ConfigError (exit 2) naming the problem."""
    resolved = out.resolve()
    _check_protected(resolved, inputs, (cwd or Path.cwd()).resolve())
    replaces: Replaces = "nothing"
    if resolved.is_file() or (resolved.exists() and not resolved.is_dir()):
        raise ConfigError(
            f"output {out} exists and is not a folder; remove it or choose another -o"
        )
    if resolved.is_dir():
        if is_package(resolved):
            replaces = "package"
        elif not any(resolved.iterdir()):
            replaces = "empty folder"
        elif overwrite:
            replaces = "folder"
        else:
            raise ConfigError(
                f"output {out} exists and is not a compile-pkg package (no manifest.json of "
                "ours); a build replaces its output folder: choose a new or empty folder, or "
                "give --overwrite to replace it"
            )
    parent = _existing_ancestor(resolved.parent)
    _probe_writable(parent, resolved)
    return OutputPlan(path=resolved, replaces=replaces, parent=parent)
