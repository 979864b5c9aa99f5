"""The task metric hook: `module:function(outputs, labels) -> score` (or `file.py:function`),
like Olive's and NNCF's validation functions. It scores what the model is for on the labelled
samples; an artifact passes when its score falls at most `max_drop` below the reference's on
the same samples, **with gains not offsetting losses**.

Why the second condition: on a few labelled samples a quantized artifact often loses an item
the reference got right and wins another back by chance (a region missed on one page, a stray
box gone on another). The totals then tie or even favour the artifact while it does the job
worse on data it has not seen. So the check is paired: each sample's artifact output is put in
place of the reference's, one at a time, and scored with the rest of the reference's outputs
(any metric works, also one that scores across samples: a ranking, a stream); the samples that
lower the reference's score are the artifact's losses. The artifact's outputs on exactly those
samples, with the reference's elsewhere, give the loss-only score; its drop must be within
`max_drop` too.

Which decides, the task or the outputs' closeness (`verdict`): an fp32 artifact must stay
within its elementwise bounds whatever the task says (a gap there is a bug). A lossy (int8,
bf16, fp16) artifact whose task score passes the paired check on at least
TASK_DECIDES_MIN_SAMPLES labelled samples is judged by the task: its outputs' closeness bounds
are proxies for the task where none is scored, and they misjudge outputs whose job is a
decision downstream (a text detector's probability map moved by 0.3 of its scale at region
borders under int8 while it found the same 28 of 28 held-out lines). Its outputs are still
recorded and a gross departure (parity.departure) still fails it. The task decides only the
outputs its metric reads (`TaskScore.read`, recorded as the metric runs on the reference's
outputs): a metric that reads a face landmarker's presence flag says nothing of its 468
landmarks, which keep their closeness bounds. Standard library and numpy
only (the GPU verification script may use it).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import os
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compiler.core.hashing import file_sha256
from compiler.core.parity import SHAPE_MISMATCH, OutputParity, departure
from compiler.core.tolerance import TaskSpec

__all__ = [
    "PAIRED_BUDGET_S",
    "TASK_DECIDES_MIN_SAMPLES",
    "TASK_RULE",
    "TaskMetric",
    "TaskScore",
    "load_callable",
    "metric_digest",
    "score_task",
    "task_decides",
    "verdict",
    "worse_bound",
]

Outputs = Sequence[Mapping[str, np.ndarray]]
TaskMetric = Callable[[Outputs, Sequence[Any]], float]
# the paired check calls the metric once more per sample; past this estimate it is not run and
# the verdict says so (a user's metric that takes seconds on a large sample set)
PAIRED_BUDGET_S = 60.0
_EPS = 1e-12
# in the cache keys of what the rule judges: a new rule, new verdicts. 2: the task decides
# lossy artifacts (`verdict`); the int8 searches see only part of the labelled samples; 3: it
# decides only the outputs the metric reads
TASK_RULE = "paired-3"
# the fewest labelled samples on which a passing task score decides a lossy artifact
TASK_DECIDES_MIN_SAMPLES = 8


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
    # the paired check (None where it was not run: see `paired_reason`)
    worse: tuple[int, ...] | None = None  # samples whose artifact output alone lowers the score
    better: int | None = None  # samples whose artifact output alone raises it
    loss_drop: float | None = None  # the drop with the artifact's outputs on `worse` only
    paired_reason: str = ""
    # the outputs the metric read on the reference's outputs (every output where it iterated
    # over them); None where it did not run. The task decides these only (`verdict`).
    read: tuple[str, ...] | None = None

    def reads(self, output: str) -> bool:
        """Whether the metric read `output` (True where that is not known)."""
        return self.read is None or output in self.read


class _Reading(dict):  # type: ignore[type-arg]
    """An output mapping that notes which outputs a metric reads: by name, or all of them
    where it iterates, copies or unpacks the mapping (dict(out), out.values(), **out)."""

    def __init__(self, outputs: Mapping[str, np.ndarray], seen: set[str]) -> None:
        super().__init__(outputs)
        self._seen = seen

    def _all(self) -> None:
        self._seen.update(super().keys())

    def __getitem__(self, key: str) -> np.ndarray:
        self._seen.add(key)
        return super().__getitem__(key)  # type: ignore[no-any-return]

    def get(self, key: str, default: Any = None) -> Any:
        self._seen.add(key)
        return super().get(key, default)

    def __iter__(self) -> Any:
        self._all()
        return super().__iter__()

    def keys(self) -> Any:
        self._all()
        return super().keys()

    def values(self) -> Any:
        self._all()
        return super().values()

    def items(self) -> Any:
        self._all()
        return super().items()

    def copy(self) -> dict[str, np.ndarray]:
        self._all()
        return dict(super().items())

    def __reduce__(self) -> Any:  # pickled (a metric handing outputs to a pool): plain dict
        self._all()
        return (dict, (dict(super().items()),))


def _read_by(fn: TaskMetric, references: Outputs, labels: Sequence[Any]) -> tuple[float, tuple]:
    """The metric's score of the reference's outputs and the names of the outputs it read."""
    seen: set[str] = set()
    score = float(fn([_Reading(o, seen) for o in references], labels))
    return score, tuple(sorted(seen))


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
    paired_budget_s: float = PAIRED_BUDGET_S,
) -> TaskScore:
    """The artifact's task score against the reference's on the same labelled samples, and
    the paired check (the module's docstring says why)."""
    base = TaskScore(
        task.metric, "not-run", max_drop=task.max_drop, higher_is_better=task.higher_is_better
    )
    if labels is None:
        return replace(base, reason="no labels: give labels.json beside the sample data")
    if len(labels) != len(outputs):
        return replace(base, reason=f"{len(labels)} labels for {len(outputs)} samples")
    try:
        fn = metric or load_callable(task.metric)
        started = time.monotonic()
        ref, read = _read_by(fn, references, labels)
        took = time.monotonic() - started
    except Exception as exc:  # the user's metric: say what it did, never crash the verdict
        return replace(base, reason=f"metric failed on the reference outputs: {_short(exc)}")
    try:
        art = float(fn(outputs, labels))
        paired = _paired(base, task, fn, outputs, references, labels, ref, took, paired_budget_s)
    except Exception as exc:
        return replace(
            base, status="failed", reference=ref, read=read, reason=f"metric failed: {_short(exc)}"
        )
    drop = task.drop(ref, art)
    reasons = []
    if not (math.isfinite(art) and drop <= task.max_drop + _EPS):
        reasons.append(
            f"task score {art:.4g} vs reference {ref:.4g}: drop {drop:.4g} > "
            f"max_drop {task.max_drop}"
        )
    if paired.loss_drop is not None and paired.loss_drop > task.max_drop + _EPS:
        reasons.append(
            f"{len(paired.worse or ())} of {len(labels)} samples do worse than the reference "
            f"(samples {_listed(paired.worse or ())}; {paired.better} do better, which does not "
            f"make up for them): drop {paired.loss_drop:.4g} on those > max_drop {task.max_drop}"
        )
    status: Literal["passed", "failed"] = "failed" if reasons else "passed"
    return replace(
        paired,
        status=status,
        read=read,
        reference=ref,
        artifact=art,
        drop=drop,
        samples=len(labels),
        reason="; ".join(reasons),
    )


def _paired(
    base: TaskScore,
    task: TaskSpec,
    fn: TaskMetric,
    outputs: Outputs,
    references: Outputs,
    labels: Sequence[Any],
    ref: float,
    took: float,
    budget_s: float,
) -> TaskScore:
    """`base` with the paired fields: which samples lower the reference's score alone, which
    raise it, and the loss-only drop."""
    n = len(outputs)
    if n < 2:
        return replace(base, paired_reason="one sample: the totals are the paired check")
    if budget_s <= 0:
        return replace(base, paired_reason="not run: no time budget for it")
    if took * (n + 1) > budget_s:
        return replace(
            base,
            paired_reason=f"not run: the metric took {took:.2g} s, {n + 1} more calls would "
            f"exceed {budget_s:g} s",
        )
    changes = []
    for i in range(n):
        mixed = list(references)
        mixed[i] = outputs[i]
        changes.append(task.drop(ref, float(fn(mixed, labels))))
    worse = [i for i, change in enumerate(changes) if change > _EPS]
    better = sum(change < -_EPS for change in changes)
    loss_drop = 0.0
    if worse:
        mixed = [outputs[i] if i in worse else r for i, r in enumerate(references)]
        # the largest single loss too: a metric where two losses cancel still counts each
        loss_drop = max(task.drop(ref, float(fn(mixed, labels))), *(changes[i] for i in worse))
    return replace(base, worse=tuple(worse), better=better, loss_drop=loss_drop)


def worse_bound(worse: int, samples: int, confidence: float = 0.95) -> float:
    """How large, at `confidence`, the share of inputs like the samples on which the artifact
    does worse than the reference can be, when the paired check found `worse` of `samples`
    (one-sided Clopper-Pearson upper bound). What a pass says and no more: none worse on 24
    samples leaves up to 11.7 % of such inputs (about 3/n); held-out files read worse than the
    reference at 1 in 20 are inside that (magika, 2026-12-01)."""
    if samples <= 0 or worse >= samples:
        return 1.0
    alpha = 1.0 - confidence
    if worse == 0:
        return 1.0 - alpha ** (1.0 / samples)
    low, high = worse / samples, 1.0
    for _ in range(60):  # bisection on P(X <= worse | samples, p) = alpha; 2**-60 apart
        mid = (low + high) / 2
        if _binomial_cdf(worse, samples, mid) > alpha:
            low = mid
        else:
            high = mid
    return high


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), 0 < p < 1, summed in logs (no overflow for large n)."""
    logs = [
        math.lgamma(n + 1)
        - math.lgamma(i + 1)
        - math.lgamma(n - i + 1)
        + i * math.log(p)
        + (n - i) * math.log1p(-p)
        for i in range(k + 1)
    ]
    return min(1.0, sum(math.exp(v) for v in logs))


def _listed(indices: Sequence[int], shown: int = 8) -> str:
    more = f", ... ({len(indices) - shown} more)" if len(indices) > shown else ""
    return ", ".join(str(i) for i in indices[:shown]) + more


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]


def task_decides(task: TaskScore | None, precision: str) -> bool:
    """Whether the task score, not the outputs' closeness, decides an artifact of this
    precision (the module's docstring says when and why)."""
    return (
        precision != "fp32"
        and task is not None
        and task.status == "passed"
        and task.worse is not None  # the paired check ran: no loss hides behind a gain
        and task.samples >= TASK_DECIDES_MIN_SAMPLES
    )


def verdict(
    outputs: Mapping[str, OutputParity],
    task: TaskScore | None,
    precision: str,
    data_sized: Collection[str] = (),
) -> tuple[bool, str]:
    """Whether judged outputs and the task score pass, and what decided it where the outputs'
    closeness alone would not have ('' otherwise): the reason a report shows. `data_sized`:
    outputs whose size depends on the data (Contract.data_sized_outputs), where a different
    size is no gross departure when the task decides (one detection more or fewer)."""
    closeness = all(m.passed for m in outputs.values())
    if task is not None and task.status == "failed":
        return False, ""
    if closeness or not task_decides(task, precision):
        return closeness, ""
    assert task is not None
    if any(not m.passed and not task.reads(name) for name, m in outputs.items()):
        return False, ""  # an output the metric never read keeps its closeness bounds
    if any(
        departure(m) and not (name in data_sized and m.error.startswith(SHAPE_MISMATCH))
        for name, m in outputs.items()
    ):
        return False, ""
    outside = "; ".join(
        f"{name}: {', '.join(m.failures)}" for name, m in sorted(outputs.items()) if m.failures
    )
    unread = sorted(name for name in outputs if not task.reads(name))
    kept = f"; {', '.join(unread)}, which it does not read, within them" if unread else ""
    return True, (
        f"decided by the task metric: on {task.samples} labelled samples it scores "
        f"{task.artifact:.4g} vs the reference's {task.reference:.4g} and the paired check "
        f"finds no loss beyond max_drop {task.max_drop:g}; the outputs it reads are outside the "
        f"{precision} closeness bounds ({outside}), proxies for the task where none is "
        f"scored{kept}"
    )
