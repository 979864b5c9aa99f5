"""Shared helpers for compiler tests: build a package through the public API."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler.build import BuildOutcome, build_package
from compiler.pipeline.config import BuildConfig, resolve_config
from compiler.pipeline.normalize import Source, parse_input_spec

# Foundation tests build with ONNX Runtime only (fast, always installed); backends have their own tests.
ORT_ONLY = {
    t: {
        "pipeline": "none",  # only the variants listed here (the file's variants merge otherwise)
        "variants": {
            "ort-fp32": {
                "passes": [{"name": "fuse", "level": "basic"}],
                "compile": {"backend": "onnxruntime"},
            }
        },
    }
    for t in ("cpu", "arm")
}


def build(
    model: Path,
    out: Path,
    cache: Path | None,
    targets: tuple[str, ...] = ("cpu", "arm"),
    raw: dict | None = None,
    overrides: list[str] | None = None,
    **kw: object,
) -> BuildOutcome:
    raw = dict(raw or {})
    given = {**ORT_ONLY, **raw.get("targets", {})}
    raw = {
        "latency": {"runs": 5, "warmup": 1},
        "tuning": {"pick": False},  # the pick's sweep after the build: test_tune_pick.py
        **raw,
        # only the variants a test names: no target takes its default pipeline's
        "targets": {t: {"pipeline": "none", **entry} for t, entry in given.items()},
    }
    cfg = resolve_config(raw, list(targets), overrides or [])
    return build_package(
        Source(onnx_path=model),
        cfg,
        targets,
        out,
        cache_dir=cache,
        use_cache=cache is not None,
        **kw,
    )  # type: ignore[arg-type]


def statuses(outcome: BuildOutcome) -> dict[str, str]:
    return {n: r.status for n, r in outcome.results.items()}


def build_source(factory: str, specs: list[str], out: Path, cfg, targets=("cpu",)) -> BuildOutcome:  # type: ignore[no-untyped-def]
    src = Source(torch_factory=factory, input_specs=tuple(parse_input_spec(s) for s in specs))
    return build_package(src, cfg, targets, out, use_cache=False)


def variant_passes(cfg: BuildConfig, target: str) -> dict[str, list[str]]:
    """Variant name -> the names of its passes, for one target of a resolved config."""
    return {n: [p.name for p in v.passes] for n, v in cfg.targets[target].variants.items()}


def example_sample_data(folder: Path, count: int = 24, seed: int = 0) -> Path:
    """Smooth images for the bundled tiny CNN (input [1,3,32,32]) as a `--sample-data` folder:
    real-looking inputs, so lossy artifacts get a verdict (on generated data they get none;
    on fewer than 20 rows a bf16/fp16 top-1 verdict neither: measure/verify.py)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        x = rng.normal(0, 1, (1, 3, 32, 32)).astype(np.float32).cumsum(axis=2).cumsum(axis=3)
        np.savez(folder / f"{i:02d}.npz", input=x / np.abs(x).max())
    return folder
