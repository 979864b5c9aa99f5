"""Code run in a fresh interpreter, for tests of what a process imports (a test process has
imported everything already)."""

from __future__ import annotations

import subprocess
import sys

__all__ = ["stdout_words"]


def stdout_words(code: str, timeout: float = 180) -> list[str]:
    """The words `code` prints, run by this Python in a new process (raises if it fails)."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=True
    )
    return done.stdout.split()
