"""compiler/measure/contention.py's OtherWorkMeter: busy time of this process and the children
it reaps is its own; a process it has not reaped is other work."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from compiler.measure.contention import OtherWorkMeter

_SPIN = "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < {s}: pass"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")


def test_a_reaped_child_is_this_process_own_work() -> None:
    """The child kept one cpu busy for the whole span and is not counted as other work:
    other work stays what the host did anyway, measured just before (a CI host shared with
    other jobs does some; an absolute bound failed there)."""
    with OtherWorkMeter() as idle:
        time.sleep(1.0)
    with OtherWorkMeter() as meter:
        subprocess.run([sys.executable, "-c", _SPIN.format(s=1.0)], check=True)
    assert meter.result is not None and idle.result is not None
    assert meter.result.cpus < idle.result.cpus + 0.5


def test_a_process_it_has_not_reaped_is_other_work() -> None:
    other = subprocess.Popen([sys.executable, "-c", _SPIN.format(s=3.0)])
    try:
        time.sleep(0.3)  # the interpreter is up and spinning
        with OtherWorkMeter() as meter:
            time.sleep(1.0)
    finally:
        other.wait()
    assert meter.result is not None and meter.result.cpus > 0.5
