"""Keep third-party output off stdout, so stdout carries only the command's result.

Libraries print progress and logs to stdout: NNCF's rich progress bars, logging handlers bound
to stdout at import, ONNX Runtime and OpenVINO from C++, TVM's worker processes. While a block
runs, file descriptor 1 (inherited by child processes) and `sys.stdout` point at a log file
instead, or at stderr when the user asked for everything there (`-v`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Captured", "third_party_output"]


@dataclass
class Captured:
    """Where the block's stdout went (None: to stderr), and how many lines it wrote."""

    path: Path | None
    lines: int = field(default=0)


@contextlib.contextmanager
def third_party_output(log: Path | None, to_stderr: bool) -> Iterator[Captured]:
    """Redirect stdout for the block: appended to `log` (a temporary file when None, removed
    afterwards) or, with `to_stderr`, to stderr."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all: nothing to protect
        yield Captured(path=None)
        return
    temporary = log is None and not to_stderr
    if to_stderr:
        target, path = os.dup(2), None
    else:
        if temporary:
            fd, name = tempfile.mkstemp(prefix="compile-pkg-stdout-", suffix=".log")
            os.close(fd)
            path = Path(name)
        else:
            assert log is not None
            path = log
        target = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    captured = Captured(path=None if temporary else path)
    stream = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    os.dup2(target, 1)
    os.close(target)
    try:
        with contextlib.redirect_stdout(stream):
            yield captured
    finally:
        stream.flush()
        os.dup2(saved, 1)
        os.close(saved)
        if path is not None:
            with contextlib.suppress(OSError):
                captured.lines = len(path.read_bytes().splitlines())
            if temporary:
                path.unlink(missing_ok=True)
