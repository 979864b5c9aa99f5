"""Parity metrics of an artifact's outputs against the reference outputs.

Per output: max abs error, max rel error (|a-r| / max(|r|, 1e-6)), mean abs error, cosine
similarity of the flattened tensors, and for outputs that look like class scores (float,
rank >= 2, last axis >= 2) top-1 agreement (argmax over the last axis equal) and top-5
agreement (the reference's argmax is among the artifact's five largest). Pass/fail applies
a precision's Tolerance: max_abs <= atol + rtol * max|ref|, cosine >= min_cosine and
top-1 >= min_top1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from compiler.pipeline.config import Tolerance

__all__ = ["OutputParity", "compare_outputs", "output_metrics", "parity_record"]

REL_EPS = 1e-6


def _is_class_scores(ref: np.ndarray) -> bool:
    return ref.dtype.kind == "f" and ref.ndim >= 2 and ref.shape[-1] >= 2


def output_metrics(outs: Sequence[np.ndarray], refs: Sequence[np.ndarray]) -> dict[str, Any]:
    """Metrics over several samples of one output (concatenated)."""
    a = np.concatenate([np.asarray(o, dtype=np.float64).ravel() for o in outs])
    r = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in refs])
    if a.shape != r.shape:
        return {"error": f"shape mismatch: {[o.shape for o in outs]} vs {[x.shape for x in refs]}"}
    diff = np.abs(a - r)
    finite = bool(np.isfinite(a).all())
    m: dict[str, Any] = {
        "max_abs_err": float(diff.max()) if diff.size else 0.0,
        "max_rel_err": float((diff / np.maximum(np.abs(r), REL_EPS)).max()) if diff.size else 0.0,
        "mean_abs_err": float(diff.mean()) if diff.size else 0.0,
        "ref_max_abs": float(np.abs(r).max()) if r.size else 0.0,
        "finite": finite,
    }
    na, nr = float(np.linalg.norm(a)), float(np.linalg.norm(r))
    if na == 0.0 and nr == 0.0:
        m["cosine"] = 1.0
    elif na == 0.0 or nr == 0.0:
        m["cosine"] = 0.0
    else:
        m["cosine"] = float(np.dot(a, r) / (na * nr))
    if refs and _is_class_scores(np.asarray(refs[0])):
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
        m["top1_agreement"] = top1 / rows
        m["top5_agreement"] = top5 / rows
    return m


def judge(m: dict[str, Any], tol: Tolerance) -> list[str]:
    """Reasons the output fails `tol`; empty when it passes."""
    if "error" in m:
        return [m["error"]]
    why = []
    if not m["finite"]:
        why.append("non-finite values (NaN/Inf) in the output")
    bound = None if tol.atol is None else tol.atol + tol.rtol * m["ref_max_abs"]
    if bound is not None and m["max_abs_err"] > bound:
        why.append(f"max abs err {m['max_abs_err']:.3g} > {bound:.3g}")
    if m["cosine"] < tol.min_cosine:
        why.append(f"cosine {m['cosine']:.6f} < {tol.min_cosine}")
    if "top1_agreement" in m and m["top1_agreement"] < tol.min_top1:
        why.append(f"top-1 agreement {m['top1_agreement']:.3f} < {tol.min_top1}")
    return why


OutputParity = dict[str, Any]


def compare_outputs(
    outputs: Sequence[dict[str, np.ndarray]],
    references: Sequence[dict[str, np.ndarray]],
    tolerance: Callable[[str], Tolerance],
) -> tuple[bool, dict[str, OutputParity]]:
    """Per-output metrics and verdicts over all samples; `tolerance(name)` picks the bound."""
    per_output: dict[str, OutputParity] = {}
    ok = True
    for name in references[0]:
        m = output_metrics([o[name] for o in outputs], [r[name] for r in references])
        tol = tolerance(name)
        why = judge(m, tol)
        m["tolerance"] = tol.model_dump()
        m["passed"] = not why
        m["failures"] = why
        ok = ok and not why
        per_output[name] = m
    return ok, per_output


def parity_record(
    passed: bool,
    per_output: dict[str, OutputParity],
    *,
    precision: str,
    samples: int,
    host: dict[str, Any],
    mode: str,
    note: str = "",
    reference: str = "",
) -> dict[str, Any]:
    """mode: native | cross-host | emulated; `note` says plainly what was run where."""
    return {
        "status": "passed" if passed else "failed",
        "precision": precision,
        "samples": samples,
        "mode": mode,
        "note": note,
        "reference": reference,
        "host": host,
        "outputs": per_output,
    }
