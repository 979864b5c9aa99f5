"""The `parity:` section of the build config: tolerances per precision and per output, what
outputs mean where the graph does not say (`kinds`), the task metric, and how many samples to
generate when the user gives none. `policy()` is what the package records.

A tolerance may be given in part: the fields given replace the defaults' (a per-output one
starts from the precision's tolerance). `task: {metric: "module:function", max_drop: 0.01}`
names a function `(outputs, labels) -> score` scored on the labelled samples; its module is
imported when the config is read, so a typo stops the build before any work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from compiler.core.contract import OutputKind
from compiler.core.task import load_callable
from compiler.core.tolerance import (
    DEFAULT_TOLERANCES,
    ParityPolicy,
    Precision,
    TaskSpec,
    Tolerance,
    merge_tolerance,
)

__all__ = ["ParityConfig"]


def _as_changes(value: Any) -> Any:
    """A tolerance given in the config: its fields as a mapping (a Tolerance: all of them)."""
    if isinstance(value, Tolerance):
        return dataclasses.asdict(value)
    return value


def _merged(base: Tolerance, value: Any) -> Any:
    changes = _as_changes(value)
    if not isinstance(changes, Mapping):
        return value  # pydantic says what is wrong with it
    try:
        return merge_tolerance(base, changes)
    except (TypeError, ValueError):
        return {**dataclasses.asdict(base), **changes}  # pydantic names the bad field


class ParityConfig(BaseModel):
    """The `parity:` block: tolerances (filled with the defaults) and per-output overrides,
    output kinds, the task metric, and how many samples to generate when the user gives none."""

    model_config = ConfigDict(extra="forbid")

    tolerances: dict[Precision, Tolerance] = Field(
        default_factory=lambda: dict(DEFAULT_TOLERANCES)  # type: ignore[arg-type]
    )
    outputs: dict[str, dict[Precision, Tolerance]] = Field(
        default_factory=dict, description="per-output overrides, by output name then precision"
    )
    kinds: dict[str, OutputKind] = Field(
        default_factory=dict, description="what an output means, where the graph does not say"
    )
    task: TaskSpec | None = Field(
        default=None,
        description="task metric module:function(outputs, labels) -> score, and its max_drop",
    )
    samples: int = Field(default=8, ge=1, le=10_000, description="generated samples when no data")
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _partial_tolerances(cls, data: Any) -> Any:
        """Fill partial tolerances: a precision's from the default, an output's from its
        precision's."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        given = data.get("tolerances") or {}
        if isinstance(given, Mapping):
            tolerances = dict(DEFAULT_TOLERANCES)
            for precision, value in given.items():
                base = DEFAULT_TOLERANCES.get(str(precision))
                tolerances[precision] = _merged(base, value) if base else value
            data["tolerances"] = tolerances
        outputs = data.get("outputs")
        if isinstance(outputs, Mapping):
            filled: dict[Any, Any] = {}
            for name, per in outputs.items():
                if not isinstance(per, Mapping):
                    filled[name] = per
                    continue
                filled[name] = {
                    p: _merged(data["tolerances"][p], v)
                    if isinstance(data["tolerances"].get(p), Tolerance)
                    else v
                    for p, v in per.items()
                }
            data["outputs"] = filled
        return data

    @field_validator("task", mode="after")
    @classmethod
    def _importable(cls, task: TaskSpec | None) -> TaskSpec | None:
        if task is not None:
            load_callable(task.metric)  # ValueError names the spec and why
        return task

    def policy(self) -> ParityPolicy:
        tolerances: dict[str, Tolerance] = {str(k): v for k, v in self.tolerances.items()}
        outputs = {o: {str(k): t for k, t in per.items()} for o, per in self.outputs.items()}
        return ParityPolicy(tolerances=tolerances, outputs=outputs, task=self.task)

    def tolerance(self, precision: str, output: str) -> Tolerance:
        return self.policy().tolerance(precision, output)
