"""Starting TensorRT in this process: the import, the plugin registry, one logger, and every
way start-up fails turned into `BackendUnavailable` with the install advice for this driver.

TensorRT keeps one logger per process (the first one a Builder or Runtime is given), so
`process_logger` makes exactly one, hands it to Polygraphy as its logger too, and lets each
build or load collect the messages of its own thread (`capture`). A CUDA 13 TensorRT on a
CUDA 12 driver does not fail at import: `trt.Builder(logger)` raises `TypeError` (pybind11
cannot wrap the null builder the factory returned); `open_builder` / `open_runtime` say what
to install instead. TensorRT and Polygraphy are imported here, inside functions.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

from compiler.core.errors import BackendUnavailable
from targets.tensorrt.install import install_advice

__all__ = [
    "capture",
    "hardware_level",
    "import_polygraphy",
    "open_builder",
    "open_runtime",
    "process_logger",
    "recent_errors",
    "start_tensorrt",
    "version_tuple",
]

log = logging.getLogger("compile_pkg.tensorrt")

_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}  # "logger": the process's ILogger; "plugins": True once registered
_RECENT: deque[str] = deque(maxlen=50)  # the process's last errors and warnings
_CAPTURE = threading.local()


def version_tuple(text: str) -> tuple[int, ...]:
    """'10.9.0.34' -> (10, 9, 0, 34); stops at the first part without digits."""
    out = []
    for part in text.replace("+", ".").replace("-", ".").split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def _unavailable(what: str, exc: BaseException) -> BackendUnavailable:
    advice = install_advice()
    return BackendUnavailable("tensorrt", f"{what}: {type(exc).__name__}: {exc}", advice)


def process_logger(trt: Any) -> Any:
    """The one TensorRT logger of this process (errors and warnings kept; the rest to debug)."""
    with _LOCK:
        if "logger" in _STATE:
            return _STATE["logger"]

        class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                line = f"{getattr(severity, 'name', severity)}: {msg}"
                if int(severity) <= int(trt.ILogger.Severity.WARNING):
                    _RECENT.append(line)
                    sink = getattr(_CAPTURE, "sink", None)
                    if sink is not None:
                        sink.append(line)
                    log.warning("%s", line)
                else:
                    log.debug("%s", line)

        _STATE["logger"] = _Logger()
        return _STATE["logger"]


@contextlib.contextmanager
def capture() -> Iterator[list[str]]:
    """The errors and warnings TensorRT logs in this thread while the block runs."""
    outer = getattr(_CAPTURE, "sink", None)
    lines: list[str] = []
    _CAPTURE.sink = lines
    try:
        yield lines
    finally:
        _CAPTURE.sink = outer
        if outer is not None:
            outer.extend(lines)


def recent_errors(n: int = 3) -> list[str]:
    """The process's last `n` TensorRT errors and warnings (for messages)."""
    return list(_RECENT)[-n:]


def start_tensorrt() -> Any:
    """The tensorrt module with its logger made and its plugins registered (once per process);
    BackendUnavailable with the advice for this driver when any of that fails."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # OSError: libnvinfer found but not loadable
        raise _unavailable("cannot import tensorrt", exc) from exc
    logger = process_logger(trt)
    with _LOCK:
        if not _STATE.get("plugins"):
            try:  # RoiAlign, DeformConv, InstanceNormalization, ...: and engines that use them
                ok = trt.init_libnvinfer_plugins(logger, "")
            except (TypeError, RuntimeError, AttributeError) as exc:
                raise _unavailable("TensorRT cannot register its plugins", exc) from exc
            if ok is False:
                log.warning("trt.init_libnvinfer_plugins returned False: plugin ops will not load")
            _STATE["plugins"] = True
    return trt


def import_polygraphy() -> Any:
    """polygraphy.backend.trt, sharing this process's TensorRT logger."""
    start_tensorrt()  # the process logger and the plugins first
    try:
        import polygraphy.backend.trt as pg
        from polygraphy.backend.trt import util as pg_util
    except ImportError as exc:
        raise BackendUnavailable(
            "tensorrt", f"cannot import polygraphy: {exc}", "pip install 'polygraphy>=0.53.4'"
        ) from exc
    with _LOCK:
        if getattr(pg_util, "TRT_LOGGER", None) is None:
            pg_util.TRT_LOGGER = _STATE["logger"]  # one logger per process, as TensorRT wants
    return pg


def open_builder(trt: Any) -> Any:
    """trt.Builder for this process's logger; start-up failures become BackendUnavailable."""
    try:
        builder = trt.Builder(process_logger(trt))
    except (TypeError, RuntimeError) as exc:  # TypeError: the factory returned nullptr
        raise _unavailable(f"TensorRT {trt.__version__} cannot create a builder here", exc) from exc
    if builder is None:
        raise BackendUnavailable("tensorrt", "trt.Builder returned None", install_advice())
    return builder


def open_runtime(trt: Any) -> Any:
    """trt.Runtime for this process's logger; start-up failures become BackendUnavailable."""
    try:
        runtime = trt.Runtime(process_logger(trt))
    except (TypeError, RuntimeError) as exc:
        raise _unavailable(f"TensorRT {trt.__version__} cannot create a runtime here", exc) from exc
    if runtime is None:
        raise BackendUnavailable("tensorrt", "trt.Runtime returned None", install_advice())
    return runtime


def hardware_level(trt_version: str, level: str) -> str | None:
    """The `HardwareCompatibilityLevel` member to set (None: leave TensorRT's default), or a
    ValueError when this TensorRT lacks it: AMPERE_PLUS is 8.6+, SAME_COMPUTE_CAPABILITY 10.9+."""
    if level == "NONE":
        return None
    need = {"AMPERE_PLUS": (8, 6), "SAME_COMPUTE_CAPABILITY": (10, 9)}[level]
    if version_tuple(trt_version)[:2] < need:
        raise ValueError(
            f"HardwareCompatibilityLevel.{level} needs TensorRT >= {need[0]}.{need[1]}; "
            f"this host has {trt_version}"
        )
    return level
