"""Backend interface, build side: how to compile an artifact for a target.

A backend is a class with a typed options model (the `compile:` block of a variant in the
config, discriminated by `backend`) and a `build` that writes artifact files into a folder
and says, in its runtime settings, how to load them. Loading and running is each backend's
runtime module (`targets/<backend>/runtime.py`, reached through targets/runtime_index.py and
targets/runner.py). Backends import their heavy library lazily, inside methods, so
`import targets.registry` works on a host that has none of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from compiler.core.contract import Contract
from compiler.core.host import Requirements
from compiler.core.records import Availability
from compiler.core.settings import RuntimeSettings

__all__ = [
    "Availability",
    "Backend",
    "BackendOptions",
    "BuildRequest",
    "BuildResult",
    "Judge",
    "Judgement",
    "SearchShare",
]


class BackendOptions(BaseModel):
    """Base of every backend's options; `backend` is the discriminator in config files."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    backend: str

    def compute_precision(self) -> str:
        """The precision the backend computes in when the graph itself is fp32 (a builder flag
        or an inference hint); quantizing or fp16 passes before it can only make it lossier."""
        return "fp32"


@dataclass(frozen=True)
class Judgement:
    """A gate's verdict on an artifact's outputs: `margin` >= 0 exactly when it passed."""

    passed: bool
    margin: float
    summary: str  # what decided, for the artifact's notes


@dataclass(frozen=True)
class SearchShare:
    """The samples a search chooses its changes on, `feeds[start:stop]` of a `Judge`, and its
    judgement of outputs there; the judge's other samples are held out for the verdict."""

    start: int
    stop: int
    where: str  # "the first 20", "the last 20"; "" where it is every sample
    judge: Callable[[list[dict[str, np.ndarray]]], Judgement]


class Judge(Protocol):
    """The package's gate for one precision, for backends that choose between builds by
    accuracy (`Backend.judged`): the verdict's checks per output kind against the reference,
    and the task metric where the samples have labels, on `feeds` (user data only).

    The unchanged build is judged on all of `feeds` (the verdict's samples: judging it there
    fits nothing); a search chooses its changes on one share of them only (`share`), the
    rest held out for the verdict."""

    feeds: list[dict[str, np.ndarray]]

    def __call__(self, outputs: list[dict[str, np.ndarray]]) -> Judgement:
        """The verdict on the outputs of all of `feeds`."""
        ...

    def share(self, outputs: list[dict[str, np.ndarray]]) -> SearchShare | None:
        """Where a search chooses, from the unchanged build's `outputs` on all of `feeds`
        (which failed): the first share where it fails there, else the other share where it
        fails there (the first then held out); None where it passes on every share a search
        may choose on, so nothing can be chosen by."""
        ...


@dataclass
class BuildRequest:
    target: str  # cpu | arm | gpu
    variant: str  # fp32 | int8 | ... (the variant's key in the config)
    precision: str  # fp32 | fp16 | bf16 | int8: what the artifact computes in
    options: BackendOptions
    contract: Contract
    workdir: Path  # scratch space, deleted after the build
    calibration: Callable[[], list[dict[str, np.ndarray]]] = lambda: []
    calibration_source: str = "generated"
    # the gate of `precision` where the backend asks for one (`Backend.judged`) and the build
    # has user data to judge on; None otherwise
    judge: Judge | None = None
    # the build's local cache folder (--cache-dir), where a backend keeps what it reuses
    # across builds (tuning databases, timing caches); None: the default root
    # (compiler.core.files.default_cache_root). Never part of a cache key.
    cache_root: Path | None = None


@dataclass
class BuildResult:
    """What `Backend.build` made. `files` are relative to the output folder.

    `runtime` holds everything the backend's runtime module needs to load the artifact (entry
    file, session options, inference precision, function names, input order...). It is
    stored in the manifest and handed back to the runtime module.
    """

    files: list[str]
    runtime: RuntimeSettings
    requirements: Requirements
    precision: str
    notes: list[str] = field(default_factory=list)
    # True when running this artifact with the same runtime on a host of another arch
    # is a meaningful cross-check (portable formats: ONNX, OpenVINO IR); False for
    # native code (TVM shared libraries, TensorRT engines).
    portable: bool = False
    status: str = "built"  # built | deferred (built later on the serving host)
    # The artifact's own interface when it accepts less than the package's contract (a library
    # built for fixed shapes): serving checks inputs against it. None: the package's contract.
    contract: Contract | None = None


class Backend(ABC):
    name: ClassVar[str]
    version: ClassVar[str]  # of this adapter; enters the cache key
    targets: ClassVar[frozenset[str]]
    options_cls: ClassVar[type[BackendOptions]]
    # True when build() reads request.calibration(): enters the cache key. No backend does
    # since int8 became a pass (quantize, nncf); the DAG still reads it.
    uses_calibration: ClassVar[bool] = False

    @classmethod
    def judged(cls, options: BackendOptions) -> bool:
        """True when build() with these options reads request.judge (it chooses between
        builds by accuracy): the gate's data, tolerances and task then enter the cache key."""
        return False

    @classmethod
    @abstractmethod
    def availability(cls, target: str) -> Availability:
        """Can this host build artifacts of this backend for `target`?"""

    @classmethod
    @abstractmethod
    def runtime_availability(cls) -> Availability:
        """Can this host run artifacts of this backend (for serving and verification)?"""

    @classmethod
    def library_versions(cls) -> dict[str, str]:
        return {}

    @abstractmethod
    def build(self, model_path: Path, request: BuildRequest, out_dir: Path) -> BuildResult:
        """Compile `model_path` (ONNX, possibly with external data beside it) into `out_dir`."""
