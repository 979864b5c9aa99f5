"""A command's own temporary folder (compiler/core/files.py process_scratch): everything the
process and its children write to the temporary folder lands in it, it is gone afterwards, and
what a SIGKILLed process left is collected by the next one while a live one's is left alone."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_USE = """
import os, subprocess, sys, tempfile
from concurrent.futures import ProcessPoolExecutor
import multiprocessing
from compiler.core.files import process_scratch
with process_scratch() as root:
    made = tempfile.mkstemp()[1]
    code = "import tempfile; print(tempfile.gettempdir())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver")) as pool:
        assert pool.submit(os.getpid).result() != os.getpid()
    print(root, made, child.strip())
print(tempfile.gettempdir(), os.environ["TMPDIR"])
"""

_HOLD = """
import sys, tempfile, time
from compiler.core.files import process_scratch
with process_scratch() as root:
    open(tempfile.mkstemp()[1], "w").write("x")
    print(root, flush=True)
    time.sleep(60)
"""


@pytest.fixture
def temp() -> Iterator[Path]:
    """A short temporary folder: under pytest's long one, multiprocessing's socket would not
    fit in the scratch folder, and its folder would be made beside it."""
    base = Path(tempfile.mkdtemp(prefix="cpkg-test-"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _env(temp: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(Path(__file__).parents[2])}


def _python(code: str, temp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env=_env(temp), capture_output=True, text=True, check=True
    )


def _holder(temp: Path) -> tuple[subprocess.Popen[str], Path]:
    env = _env(temp)
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_temporary_files_go_into_the_scratch_folder_and_leave_with_it(temp: Path) -> None:
    run = _python(_USE, temp)
    assert run.stderr == ""  # no finalizer tripped over a folder removed before it
    out = run.stdout.split()
    root, made, child = (Path(w) for w in out[:3])
    assert root.parent == temp and made.parent == root and child == root
    assert out[3:] == [str(temp), str(temp)]  # restored after the block
    assert list(temp.iterdir()) == []  # gone once the process ended, fork server's folder too


def test_a_killed_process_folder_is_collected_and_a_live_one_is_not(temp: Path) -> None:
    killed, killed_root = _holder(temp)
    live, live_root = _holder(temp)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert killed_root.is_dir() and any(killed_root.iterdir())  # no cleanup ran
        _python(
            "from compiler.core.files import process_scratch\nwith process_scratch(): pass", temp
        )
        assert not killed_root.exists()
        assert live_root.is_dir() and any(live_root.iterdir())
        assert sorted(temp.iterdir()) == [live_root]
    finally:
        live.terminate()
        live.wait()


_FORK_SERVER = """
import multiprocessing, multiprocessing.util
from multiprocessing import forkserver
from compiler.core.files import process_scratch
with process_scratch() as root:
    multiprocessing.get_context("forkserver")
    forkserver.ensure_running()
    print(root, multiprocessing.util.get_temp_dir(), flush=True)
"""


def test_a_temporary_folder_too_deep_for_a_socket_still_starts_the_fork_server(temp: Path) -> None:
    """Under a TMPDIR so deep that the fork server's socket path would pass 107 bytes (a CI
    job's, pytest-xdist's), its folder is made in a short system temporary folder instead of
    failing the build with "AF_UNIX path too long", and is gone after the process."""
    deep = temp / ("d" * 90)
    deep.mkdir()
    run = _python(_FORK_SERVER, deep)
    root, fork_dir = (Path(w) for w in run.stdout.split())
    assert root.parent == deep
    assert deep not in fork_dir.parents and len(os.fsencode(fork_dir)) + 25 <= 107
    assert not fork_dir.exists()
    assert list(deep.iterdir()) == []


_ENTER = """
from compiler.core.files import process_scratch
with process_scratch() as root:
    print(root, flush=True)
"""


def test_a_folder_is_made_and_locked_under_a_lock_on_the_temporary_folder(temp: Path) -> None:
    """While another process holds the lock on the temporary folder (it is between making its
    folder and locking it), a process collects and makes nothing; a folder left unlocked in
    that moment by a killed process is collected by the next (the CI failure: a build killed
    there left its folder for ten minutes)."""
    half_made = Path(tempfile.mkdtemp(prefix="compile-pkg.run-", dir=temp))  # never locked
    fd = os.open(temp, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        waiting = subprocess.Popen(
            [sys.executable, "-c", _ENTER], env=_env(temp), stdout=subprocess.PIPE, text=True
        )
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(timeout=3)
        assert sorted(temp.iterdir()) == [half_made]  # neither collected nor made
    finally:
        os.close(fd)
    out, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0
    assert Path(out.strip()).parent == temp
    assert list(temp.iterdir()) == []  # the half-made folder collected, its own removed
