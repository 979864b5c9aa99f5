"""Instruments: hooks the scheduler calls around every node (TVM's `PassInstrument` is the
model). Timing and progress live here, so no node kind times or reports itself and nothing is
timed twice."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from compiler.core.records import NodeResult
from compiler.pipeline.graph import NodeDef

__all__ = ["Instrument", "ProgressInstrument", "TimingInstrument"]


class Instrument(Protocol):
    """`before` runs just before a node is handled (cache lookup included), `after` once its
    result is final. Instruments nest: the first listed is the outermost."""

    def before(self, node: NodeDef) -> None: ...

    def after(self, node: NodeDef, result: NodeResult) -> None: ...


class TimingInstrument:
    """Sets `NodeResult.seconds`: the wall time from `before` to `after`."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._started: dict[str, float] = {}

    def before(self, node: NodeDef) -> None:
        self._started[node.id] = self._clock()

    def after(self, node: NodeDef, result: NodeResult) -> None:
        result.seconds = round(self._clock() - self._started.pop(node.id), 3)


class ProgressInstrument:
    """Reports each node to `on_event`: `(id, None)` when it starts, `(id, result)` when done."""

    def __init__(self, on_event: Callable[[str, NodeResult | None], None]) -> None:
        self._on_event = on_event

    def before(self, node: NodeDef) -> None:
        self._on_event(node.id, None)

    def after(self, node: NodeDef, result: NodeResult) -> None:
        self._on_event(node.id, result)
