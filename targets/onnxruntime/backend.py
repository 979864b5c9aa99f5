"""ONNX Runtime backend: `cpu` (x86-64) and `arm` (aarch64) artifacts.

The artifact is the pipeline's ONNX model plus the session options to load it with, with the
exact rewrites of rewrites.py (PRelu as Mul and Max/Min). The model stays portable (only
hardware-independent graph rewrites happen at build time);
hardware-specific optimization (`all`: layout transforms, NCHWc) is applied by ONNX Runtime
on the serving host at load time, where the host is known.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compiler.core.errors import BackendUnavailable, BuildError, short_message
from compiler.core.host import Requirements
from compiler.core.settings import OnnxRuntimeSettings, OnnxRuntimeSpecialization
from targets.base import Availability, Backend, BackendOptions, BuildRequest, BuildResult
from targets.int8_flavour import with_int8_flavour
from targets.onnxruntime.rewrites import rewrite_for_ort
from targets.onnxruntime.runtime import session
from targets.onnxruntime.runtime import version as ort_version
from targets.onnxruntime.specialize import (
    Binding,
    bindings,
    describe_all,
    file_name,
    specialize,
)

__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeOptions", "reference_session"]

_ARCH = {"cpu": "x86_64", "arm": "aarch64"}
SPECIAL_CHECKS = 4  # calibration feeds each specialization is compared on at build


class OnnxRuntimeOptions(BackendOptions):
    backend: Literal["onnxruntime"] = "onnxruntime"
    # applied on the serving host when the session is created
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    intra_op_num_threads: int = 0  # 0: ONNX Runtime's default (one per physical core)
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    min_runtime_version: str = "1.20"
    # also carry the model bound to the values the contract states for its If selectors
    # (specialize.py); the runner guards each call and runs the general model otherwise
    specialize: bool = True


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    # 2: requirements say an int8 model's flavour and the classes it is meant for; 3: PRelu
    # rewritten for ONNX Runtime's kernels (rewrites.py); 4: If selectors' guarded
    # specializations (specialize.py)
    version = "4"
    targets = frozenset({"cpu", "arm"})
    options_cls = OnnxRuntimeOptions

    @classmethod
    def availability(cls, target: str) -> Availability:
        if target not in cls.targets:
            return Availability(ok=False, reason=f"no onnxruntime artifact for target '{target}'")
        return cls.runtime_availability()

    @classmethod
    def runtime_availability(cls) -> Availability:
        try:
            ort_version()
        except BackendUnavailable as exc:
            return Availability(ok=False, reason=exc.reason, install=exc.install)
        return Availability(ok=True)

    @classmethod
    def library_versions(cls) -> dict[str, str]:
        return {"onnxruntime": ort_version()}

    def build(self, model_path: Path, request: BuildRequest, out_dir: Path) -> BuildResult:
        opts = request.options
        assert isinstance(opts, OnnxRuntimeOptions)
        files = []
        for src in sorted(model_path.parent.iterdir()):
            if src.is_file():
                shutil.copyfile(src, out_dir / src.name)
                files.append(src.name)
        notes = rewrite_for_ort(model_path, out_dir / model_path.name)
        # Load once here so a model ONNX Runtime cannot run fails its own build, not serving.
        try:
            general = session(
                out_dir / model_path.name, opts.graph_optimization_level, 1, "sequential"
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BuildError(
                f"onnxruntime cannot load {model_path.name}: {short_message(exc, 400)}"
            ) from exc
        specializations: list[OnnxRuntimeSpecialization] = []
        if opts.specialize:
            specializations, more = _specialize(out_dir / model_path.name, general, request, opts)
            files += [s.model for s in specializations]
            notes += more
        return BuildResult(
            files=files,
            runtime=OnnxRuntimeSettings(
                model=model_path.name,
                graph_optimization_level=opts.graph_optimization_level,
                intra_op_num_threads=opts.intra_op_num_threads,
                execution_mode=opts.execution_mode,
                specializations=tuple(specializations),
            ),
            requirements=_requirements(request, out_dir / model_path.name),
            precision=request.precision,
            notes=notes,
            portable=True,
        )


def _specialize(
    model: Path, general: Any, request: BuildRequest, opts: OnnxRuntimeOptions
) -> tuple[list[OnnxRuntimeSpecialization], list[str]]:
    """The model bound to each combination of its If selectors' values, next to it; each one
    that stands in for the general model (its session `general`) is kept. Returns them and
    the artifact's notes."""
    made: list[OnnxRuntimeSpecialization] = []
    why_not: list[str] = []
    feeds: list[dict[str, np.ndarray]] | None = None  # read at the first folded binding
    for binding in bindings(request.contract):
        name = file_name(model.name, len(made))
        folded, why = specialize(model, binding, model.parent / name)
        if folded:
            if feeds is None:
                feeds = request.calibration()[:SPECIAL_CHECKS]
            why = _differs(general, model.parent / name, binding, feeds, opts)
            if why:
                (model.parent / name).unlink()
                folded = 0
        if folded:
            made.append(OnnxRuntimeSpecialization(name, binding.inputs, binding.values, folded))
        else:
            why_not.append(f"not specialized for {binding.describe()}: {why}")
    notes = [describe_all(made)] if made else []
    return made, notes + why_not


def _differs(
    general: Any,
    special: Path,
    binding: Binding,
    checks: list[dict[str, np.ndarray]],
    opts: OnnxRuntimeOptions,
) -> str:
    """Why the specialization cannot stand in for the general model ("" where it can): ONNX
    Runtime cannot load it, or on the `checks` (calibration feeds) with the bound
    inputs set to the binding's values its outputs are not the general model's (within fp32
    rounding: max |a - b| <= 1e-5 + 1e-4 * max |b|, the same non-finite elements). A feed the
    general model cannot run (a value its other inputs do not fit) is not counted; with no
    check run it is kept, as the artifact's parity verdict still runs every sample through
    the runner."""
    try:
        sess = session(special, opts.graph_optimization_level, 1, "sequential")
    except Exception as exc:  # onnxruntime's own types: the general model serves
        return f"onnxruntime cannot load it: {short_message(exc, 200)}"
    names = [o.name for o in general.get_outputs()]
    bound = dict(zip(binding.inputs, binding.values, strict=True))
    for check in checks:
        feeds = {k: np.full_like(v, bound[k]) if k in bound else v for k, v in check.items()}
        try:
            want = general.run(names, feeds)
        except Exception:  # noqa: BLE001 - onnxruntime's types; see the docstring
            continue
        try:
            got = sess.run(names, {k: v for k, v in feeds.items() if k not in bound})
        except Exception as exc:  # noqa: BLE001 - onnxruntime's types
            return f"it fails where the general model runs: {short_message(exc, 200)}"
        for name, a, b in zip(names, got, want, strict=True):
            why = _unlike(name, np.asarray(a), np.asarray(b))
            if why:
                return why
    return ""


def _unlike(name: str, a: np.ndarray, b: np.ndarray) -> str:
    """Why output `name` of the specialization (`a`) is not the general model's (`b`)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"output {name!r} is {a.dtype}{list(a.shape)}, not {b.dtype}{list(b.shape)}"
    if a.dtype.kind not in "fc":
        return "" if np.array_equal(a, b) else f"output {name!r} differs from the general model's"
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return f"output {name!r} is not finite where the general model's is"
    finite = np.isfinite(b)
    diff = np.abs(a[finite].astype(np.float64) - b[finite].astype(np.float64))
    tol = 1e-5 + 1e-4 * float(np.max(np.abs(b[finite]), initial=0.0))
    worst = float(np.max(diff, initial=0.0))
    return f"output {name!r} differs from the general model's by {worst:.3g}" if worst > tol else ""


def _requirements(request: BuildRequest, model: Path) -> Requirements:
    """Any host of the arch with ONNX Runtime; an int8 model also says its flavour and the
    ISA classes it is meant for (u8s8 for VNNI/AMX, u8s8-rr for AVX2: compiler/core/isa.py)."""
    opts = request.options
    assert isinstance(opts, OnnxRuntimeOptions)
    req = Requirements(
        arch=_ARCH[request.target],
        runtime="onnxruntime",
        min_runtime_version=opts.min_runtime_version,
    )
    return with_int8_flavour(req, model) if request.precision == "int8" else req


def reference_session(model_path: Path, threads: int = 0) -> Any:
    """The reference: the normalized fp32 model on ONNX Runtime CPU, default optimizations."""
    return session(model_path, "all", threads, "sequential")
