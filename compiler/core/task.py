"""The task metric hook: `module:function(outputs, labels) -> score` (or `file.py:function`),
like Olive's and NNCF's validation functions. It scores what the model is for on the labelled
samples; an artifact passes when its score falls at most `max_drop` below the reference's on
the same samples. Standard library and numpy only (the GPU verification script may use it).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compiler.core.hashing import file_sha256
from compiler.core.tolerance import TaskSpec

__all__ = ["TaskMetric", "TaskScore", "load_callable", "metric_digest", "score_task"]

Outputs = Sequence[Mapping[str, np.ndarray]]
TaskMetric = Callable[[Outputs, Sequence[Any]], float]


@dataclass(frozen=True)
class TaskScore:
    """The task metric on the labelled samples, for the reference and the artifact. `not-run`:
    no labels, or the metric could not be loaded here; the verdict then rests on the outputs."""

    __pydantic_config__ = {"extra": "forbid"}  # read by pydantic where embedded

    metric: str
    status: Literal["passed", "failed", "not-run"]
    reference: float | None = None
    artifact: float | None = None
    drop: float | None = None  # reference - artifact (artifact - reference if lower is better)
    max_drop: float = 0.0
    higher_is_better: bool = True
    samples: int = 0
    reason: str = ""


def load_callable(spec: str) -> Callable[..., Any]:
    """`module:function` or `path/to/file.py:function`, imported; ValueError if it cannot be."""
    module, _, attr = spec.rpartition(":")
    try:
        if module.endswith(".py"):
            file_spec = importlib.util.spec_from_file_location(Path(module).stem, module)
            if file_spec is None or file_spec.loader is None:
                raise ImportError(f"cannot load {module}")
            mod = importlib.util.module_from_spec(file_spec)
            file_spec.loader.exec_module(mod)
        else:
            if os.getcwd() not in sys.path:  # a console script does not search the cwd
                sys.path.append(os.getcwd())
            mod = importlib.import_module(module)
        fn = getattr(mod, attr)
    except (ImportError, AttributeError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{spec!r}: cannot import ({type(exc).__name__}: {exc})") from exc
    if not callable(fn):
        raise ValueError(f"{spec!r}: {attr} is not a function")
    return fn  # type: ignore[no-any-return]


def metric_digest(spec: str) -> str:
    """sha256 of the file that defines the metric: its code decides the scores, so a changed
    metric must not reuse cached verdicts. '' where the source cannot be found."""
    try:
        source = inspect.getsourcefile(load_callable(spec))
    except (TypeError, ValueError):
        return ""
    return file_sha256(Path(source)) if source and Path(source).is_file() else ""


def score_task(
    task: TaskSpec,
    outputs: Outputs,
    references: Outputs,
    labels: Sequence[Any] | None,
    metric: TaskMetric | None = None,
) -> TaskScore:
    """The artifact's task score against the reference's on the same labelled samples."""
    base = TaskScore(
        task.metric, "not-run", max_drop=task.max_drop, higher_is_better=task.higher_is_better
    )
    if labels is None:
        return replace(base, reason="no labels: give labels.json beside the sample data")
    if len(labels) != len(outputs):
        return replace(base, reason=f"{len(labels)} labels for {len(outputs)} samples")
    try:
        fn = metric or load_callable(task.metric)
        ref = float(fn(references, labels))
    except Exception as exc:  # the user's metric: say what it did, never crash the verdict
        return replace(base, reason=f"metric failed on the reference outputs: {_short(exc)}")
    try:
        art = float(fn(outputs, labels))
    except Exception as exc:
        return replace(base, status="failed", reference=ref, reason=f"metric failed: {_short(exc)}")
    drop = task.drop(ref, art)
    ok = math.isfinite(art) and drop <= task.max_drop + 1e-12
    reason = (
        ""
        if ok
        else f"task score {art:.4g} vs reference {ref:.4g}: drop {drop:.4g} > "
        f"max_drop {task.max_drop}"
    )
    status: Literal["passed", "failed"] = "passed" if ok else "failed"
    return replace(
        base,
        status=status,
        reference=ref,
        artifact=art,
        drop=drop,
        samples=len(labels),
        reason=reason,
    )


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
