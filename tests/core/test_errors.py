"""Our exceptions cross process boundaries (worker processes, Ray) whole."""

from __future__ import annotations

import pickle
import signal

from compiler.core.errors import BackendUnavailable, InputModelError, Terminated


def test_exceptions_with_fields_survive_pickling() -> None:
    exc = BackendUnavailable("openvino", "cannot compile", "pip install x", what="cannot run")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is BackendUnavailable and str(back) == str(exc)
    fields = ("backend", "reason", "install", "what")
    assert [getattr(back, f) for f in fields] == [getattr(exc, f) for f in fields]
    term = pickle.loads(pickle.dumps(Terminated(signal.SIGTERM)))
    assert isinstance(term, Terminated) and term.signum == signal.SIGTERM
    assert str(pickle.loads(pickle.dumps(InputModelError("m.onnx: bad")))) == "m.onnx: bad"
