"""The commit a source file's git checkout is at, read from the repository's files.

Not `git rev-parse HEAD`: git's answer depends on the caller's home folder. A checkout owned by
another user is refused ("dubious ownership") unless the global config lists it in
`safe.directory`, so the same build recorded a commit under one HOME and none under another,
and two builds of one model got different core digests. Reading `HEAD`, the loose ref and
`packed-refs` runs nothing from the repository (no hooks, no config) and needs no git binary.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["head_commit"]

_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # sha1 or sha256 object names


def _git_dir(start: Path) -> Path | None:
    """The git folder of the checkout holding `start`: `.git` itself, or where a `.git` file
    (a worktree or a submodule) points."""
    for folder in (start, *start.parents):
        dot = folder / ".git"
        if dot.is_dir():
            return dot
        if dot.is_file():
            text = dot.read_text(errors="replace").strip()
            if text.startswith("gitdir:"):
                target = Path(text.removeprefix("gitdir:").strip())
                return target if target.is_absolute() else (folder / target).resolve()
            return None
    return None


def _common_dir(git_dir: Path) -> Path:
    """Where a worktree's shared refs live (`commondir`), else the git folder itself."""
    common = git_dir / "commondir"
    if common.is_file():
        target = Path(common.read_text().strip())
        return target if target.is_absolute() else (git_dir / target).resolve()
    return git_dir


def _ref(git_dir: Path, ref: str) -> str:
    for base in dict.fromkeys((git_dir, _common_dir(git_dir))):
        loose = base / ref
        if loose.is_file():
            return loose.read_text().strip()
        packed = base / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name.strip() == ref:
                    return sha
    return ""


def head_commit(path: Path) -> str:
    """The commit HEAD names in the git checkout holding `path`; '' where there is none (not
    in a checkout, an unborn branch, a layout this reader does not know)."""
    try:
        git_dir = _git_dir(path.resolve().parent if path.is_file() else path.resolve())
        if git_dir is None:
            return ""
        head = (git_dir / "HEAD").read_text().strip()
        sha = _ref(git_dir, head.removeprefix("ref:").strip()) if head.startswith("ref:") else head
    except OSError:
        return ""
    return sha if _SHA.fullmatch(sha) else ""
