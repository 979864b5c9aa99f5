"""What every real model of the catalogue offers: where it is, labelled data to build it with,
and its task, scored by one metric (scripts/realdata/metrics.py) in two places: by
compile-pkg's task hook on the labelled parity samples (`parity.task.metric`), and by
`check(runner)` on a held-out task set run through any runner (the original on ONNX Runtime,
or an artifact loaded as serving loads it)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal

import numpy as np

from scripts.realdata.paths import MODELS_DIR, models_cache

__all__ = [
    "Feed",
    "Item",
    "Label",
    "Outputs",
    "RealModel",
    "Runner",
    "Scorer",
    "TaskOutputs",
    "TaskRun",
    "TaskScore",
    "ort_runner",
    "run_items",
]

Feed = dict[str, np.ndarray]
Runner = Callable[[Feed], dict[str, np.ndarray]]  # one feed in, outputs by name out
Label = Any  # a JSON value: what the drawing, the synthesis or the file name knows
Item = tuple[Feed, Label]
Outputs = Sequence[Mapping[str, np.ndarray]]  # one output dict per sample, as the hook gets


@dataclass(frozen=True)
class TaskScore:
    """The fraction of task items done right, and a line a person reads."""

    score: float
    summary: str

    def as_well_as(self, original: TaskScore) -> bool:
        return self.score >= original.score - 1e-9


Scorer = Callable[[Outputs, Sequence[Label]], TaskScore]
TaskOutputs = tuple[list[dict[str, np.ndarray]], list[Label]]  # outputs and their labels
TaskRun = Callable[[Runner], TaskOutputs]  # the held-out task set through a runner


def run_items(run: Runner, items: Sequence[Item]) -> TaskOutputs:
    """Each item's feed through `run`, one at a time: (outputs, labels)."""
    return [run(feed) for feed, _ in items], [label for _, label in items]


@dataclass(frozen=True)
class RealModel:
    """One real pretrained model.

    `items(count, seed)`: labelled feeds (seed 0: calibration, 1: parity samples; the task
    set uses its own seeds or fixed items, disjoint from both). `score(outputs, labels)`: the
    task metric, the one `metric` names for compile-pkg. `task_set(runner)`: the held-out task
    set's outputs and labels. `counts`: feeds make_data writes per split by default, sized so
    the parity samples hold enough task items for the metric to mean something.
    """

    id: str
    file: str
    where: Literal["shared", "cache"]
    source: str  # "package version (licence)"
    task: str
    items: Callable[[int, int], list[Item]]
    score: Scorer
    task_set: TaskRun
    needs: tuple[str, ...] = field(default=())  # programs or Python modules the data needs
    counts: Mapping[str, int] = field(default_factory=lambda: {"calibration": 16, "sample": 8})

    @property
    def path(self) -> Path:
        return (MODELS_DIR if self.where == "shared" else models_cache()) / self.file

    @property
    def metric(self) -> str:
        """compile-pkg's `parity.task.metric` for this model (run from the repo root, or with
        the repo on PYTHONPATH)."""
        return f"scripts.realdata.metrics:{self.id}"

    def feeds(self, count: int, seed: int) -> list[Feed]:
        return [feed for feed, _ in self.items(count, seed)]

    def check(self, run: Runner) -> TaskScore:
        """The held-out task set through `run`, scored by the model's task metric."""
        return self.score(*self.task_set(run))

    def missing(self) -> str | None:
        """Why this model cannot be used on this host, or None."""
        if not self.path.is_file():
            how = (
                "python scripts/fetch_models.py"
                if self.where == "cache"
                else "the shared models folder sits beside the checkout"
            )
            return f"{self.path} not found ({how})"
        for need in self.needs:
            if shutil.which(need) is None and find_spec(need) is None:
                hint = "apt-get install" if need == "espeak-ng" else "pip install"
                return f"{need} not found ({hint} {need})"
        return None


def ort_runner(path: Path) -> Runner:
    """The original model on ONNX Runtime's CPU provider, as its own package runs it."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(feed: Feed) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(None, feed), strict=True))

    return run
