"""OpenVINO's and NNCF's usage telemetry, kept off wherever compile-pkg loads them.

`import openvino` starts `openvino_telemetry` (the converter's module initialises it), which
writes a client id and a usage counter under ~/intel (`openvino_ga_cid`, `stats`: every
process that imports OpenVINO bumps the counter) and, for `ovc` conversions and NNCF's
`quantize`, sends events to Google Analytics from a background thread and process. A build
then touched a folder outside its output, and spent CPU on the sends beside its own work:
about 13 s of the 92 s of CPU a cold `--targets cpu` build of a small CNN took on a 2-vCPU
host, most of it setting up TLS contexts and sending from a child process, offline (py-spy,
2026-12-03).

openvino_telemetry declines, before it reads or writes anything, where the caller passes
`disable_in_ci` (the converter and NNCF both do) and `CI=true` is set; NNCF swaps its
telemetry for a stub where `NNCF_CI` is set when it is imported. The telemetry object is a
process-wide singleton that decides at its (re)initialisation, which `import openvino`, NNCF's
import and each `convert_model` trigger, so those run inside `telemetry_off()`; the variables
are restored after, so nothing else in the process sees them.

ONNX Runtime (1.32 on Linux) keeps a device id and an offline event store under
~/.cache/Microsoft/DeveloperTools/.onnxruntime from `import onnxruntime` on, unless
ORT_DISABLE_TELEMETRY is set when it loads; `ort_telemetry_off()` sets it for the process
where the user has not set it (a variable no other library reads), and the packages
`compiler`, `targets` and `passes` call it when they are imported, before any of their modules
imports onnxruntime. Child processes inherit it. Standard library only (the runtime modules
serving loads use it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["TELEMETRY_OFF", "ort_telemetry_off", "telemetry_off"]

TELEMETRY_OFF = {"CI": "true", "NNCF_CI": "1"}


@contextlib.contextmanager
def telemetry_off() -> Iterator[None]:
    """The block runs with TELEMETRY_OFF in the environment; the previous values come back
    after (a variable that was unset is unset again)."""
    saved = {k: os.environ.get(k) for k in TELEMETRY_OFF}
    os.environ.update(TELEMETRY_OFF)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ort_telemetry_off() -> None:
    """ONNX Runtime's telemetry off for this process and its children, unless the user set
    ORT_DISABLE_TELEMETRY themselves (module docstring)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
