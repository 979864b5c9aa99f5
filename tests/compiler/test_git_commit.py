"""The source's git commit recorded in a package's provenance (core/git.py): the commit git
itself names, whoever owns the checkout and whatever HOME the build runs under."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from compiler.core.git import head_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args],
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "models").mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    for n in range(2):
        (root / "models" / "m.onnx").write_bytes(b"model %d" % n)
        git(root, "add", ".")
        git(root, "commit", "-q", "-m", f"c{n}")
    return root


def test_a_branch_head_loose_and_packed(repo: Path) -> None:
    model = repo / "models" / "m.onnx"
    assert head_commit(model) == git(repo, "rev-parse", "HEAD")
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git/refs/heads/main").exists()
    assert head_commit(model) == git(repo, "rev-parse", "HEAD")


def test_a_detached_head_and_a_worktree(repo: Path, tmp_path: Path) -> None:
    first = git(repo, "rev-parse", "HEAD~1")
    git(repo, "checkout", "-q", first)
    assert head_commit(repo / "models" / "m.onnx") == first
    git(repo, "checkout", "-q", "main")
    git(repo, "worktree", "add", "-q", "-b", "side", str(tmp_path / "wt"), "HEAD~1")
    assert head_commit(tmp_path / "wt" / "models" / "m.onnx") == first
    assert head_commit(repo / "models" / "m.onnx") == git(repo, "rev-parse", "main")


def test_no_checkout_or_an_unborn_branch_records_nothing(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert head_commit(tmp_path / "m.onnx") == ""
    git(tmp_path, "init", "-q", "-b", "main")
    assert head_commit(tmp_path / "m.onnx") == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a checkout's owner needs root")
def test_a_checkout_another_user_owns_under_an_empty_home(repo: Path, tmp_path: Path) -> None:
    """git refuses such a checkout unless HOME's config trusts it: the recorded commit did
    depend on HOME, and one model built twice got two core digests."""
    want = git(repo, "rev-parse", "HEAD")
    for p in [repo, *repo.rglob("*")]:
        os.chown(p, 4321, 4321, follow_symlinks=False)
    home = tmp_path / "home"
    home.mkdir()
    refused = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"],
        env={"PATH": os.environ["PATH"], "HOME": str(home)},
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "dubious ownership" in refused.stderr
    assert head_commit(repo / "models" / "m.onnx") == want
