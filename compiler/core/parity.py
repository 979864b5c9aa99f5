"""Parity metrics of an artifact's outputs against the reference outputs: the one implementation
the build, `compile-pkg verify`, the emulated aarch64 check and the GPU verification script use.

Per output: max abs error, max rel error (|a-r| / max(|r|, 1e-6)), mean abs error, cosine
similarity of the flattened tensors, and for outputs that look like class scores (float,
rank >= 2, last axis >= 2) top-1 agreement (argmax over the last axis equal) and top-5
agreement (the reference's argmax is among the artifact's five largest). A Tolerance turns
the metrics into a verdict. Standard library and numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from compiler.core.tolerance import Tolerance

__all__ = ["OutputParity", "compare_outputs", "judge", "output_metrics"]

REL_EPS = 1e-6


@dataclass(frozen=True)
class OutputParity:
    """Metrics of one output over all samples, and (once judged) its verdict."""

    __pydantic_config__ = {"extra": "forbid"}  # read by pydantic where embedded

    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    mean_abs_err: float = 0.0
    ref_max_abs: float = 0.0
    finite: bool = True
    cosine: float = 1.0
    top1_agreement: float | None = None
    top5_agreement: float | None = None
    error: str = ""  # the output could not be compared at all (shape mismatch)
    tolerance: Tolerance | None = None
    passed: bool = False
    failures: tuple[str, ...] = ()


def _is_class_scores(ref: np.ndarray) -> bool:
    return ref.dtype.kind == "f" and ref.ndim >= 2 and ref.shape[-1] >= 2


def output_metrics(outs: Sequence[np.ndarray], refs: Sequence[np.ndarray]) -> OutputParity:
    """Metrics over several samples of one output (concatenated); not yet judged."""
    a = np.concatenate([np.asarray(o, dtype=np.float64).ravel() for o in outs])
    r = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in refs])
    if a.shape != r.shape:
        shapes = [np.shape(o) for o in outs], [np.shape(x) for x in refs]
        return OutputParity(error=f"shape mismatch: {shapes[0]} vs {shapes[1]}", finite=False)
    diff = np.abs(a - r)
    na, nr = float(np.linalg.norm(a)), float(np.linalg.norm(r))
    if na == 0.0 and nr == 0.0:
        cosine = 1.0
    elif na == 0.0 or nr == 0.0:
        cosine = 0.0
    else:
        cosine = float(np.dot(a, r) / (na * nr))
    top1 = top5 = None
    if refs and _is_class_scores(np.asarray(refs[0])):
        top1, top5 = _topk_agreement(outs, refs)
    return OutputParity(
        max_abs_err=float(diff.max()) if diff.size else 0.0,
        max_rel_err=float((diff / np.maximum(np.abs(r), REL_EPS)).max()) if diff.size else 0.0,
        mean_abs_err=float(diff.mean()) if diff.size else 0.0,
        ref_max_abs=float(np.abs(r).max()) if r.size else 0.0,
        finite=bool(np.isfinite(a).all()),
        cosine=cosine,
        top1_agreement=top1,
        top5_agreement=top5,
    )


def _topk_agreement(outs: Sequence[np.ndarray], refs: Sequence[np.ndarray]) -> tuple[float, float]:
    top1, top5, rows = 0, 0, 0
    for o, x in zip(outs, refs, strict=True):
        o2 = np.asarray(o).reshape(-1, np.asarray(o).shape[-1])
        x2 = np.asarray(x).reshape(-1, np.asarray(x).shape[-1])
        ref_top = x2.argmax(axis=1)
        top1 += int((o2.argmax(axis=1) == ref_top).sum())
        k = min(5, o2.shape[1])
        best = np.argpartition(-o2, k - 1, axis=1)[:, :k]
        top5 += int((best == ref_top[:, None]).any(axis=1).sum())
        rows += o2.shape[0]
    return top1 / rows, top5 / rows


def judge(m: OutputParity, tol: Tolerance) -> list[str]:
    """Reasons the output fails `tol`; empty when it passes."""
    if m.error:
        return [m.error]
    why = []
    if not m.finite:
        why.append("non-finite values (NaN/Inf) in the output")
    bound = None if tol.atol is None else tol.atol + tol.rtol * m.ref_max_abs
    if bound is not None and m.max_abs_err > bound:
        why.append(f"max abs err {m.max_abs_err:.3g} > {bound:.3g}")
    if m.cosine < tol.min_cosine:
        why.append(f"cosine {m.cosine:.6f} < {tol.min_cosine}")
    if m.top1_agreement is not None and m.top1_agreement < tol.min_top1:
        why.append(f"top-1 agreement {m.top1_agreement:.3f} < {tol.min_top1}")
    return why


def compare_outputs(
    outputs: Sequence[Mapping[str, np.ndarray]],
    references: Sequence[Mapping[str, np.ndarray]],
    tolerance: Callable[[str], Tolerance],
) -> tuple[bool, dict[str, OutputParity]]:
    """Per-output metrics and verdicts over all samples; `tolerance(name)` picks the bound."""
    per_output: dict[str, OutputParity] = {}
    for name in references[0]:
        m = output_metrics([o[name] for o in outputs], [r[name] for r in references])
        tol = tolerance(name)
        why = judge(m, tol)
        per_output[name] = replace(m, tolerance=tol, passed=not why, failures=tuple(why))
    return all(m.passed for m in per_output.values()), per_output
