"""What a benchmark run does (perf/run.py): repeats, data sizes, and what --quick leaves out."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Collection
from dataclasses import dataclass

from compiler.core.errors import ConfigError
from compiler.core.policies import LatencyPolicy
from compiler.pipeline.config import resolve_config

__all__ = ["ONE_CHANGE", "Plan", "dropped_variants", "library_versions", "pick_one_change"]

# The first of these that the resolved config accepts is the "one change" build's override:
# a quantize pass's calibration method (cpu first, where compile-pkg's int8 runs here), else
# NNCF's preset in the OpenVINO int8 variant.
ONE_CHANGE = (
    "cpu.quantize.calibration_method=percentile",
    "gpu.quantize.calibration_method=percentile",
    "cpu.ov-int8.nncf.preset=mixed",
)
LIBRARIES = (
    "compile-pkg",
    "onnx",
    "onnxruntime",
    "openvino",
    "nncf",
    "apache-tvm",
    "torch",
    "numpy",
    "olive-ai",
    "onnxsim",
    "matplotlib",
)


@dataclass(frozen=True)
class Plan:
    """What a run does; --quick trades repeats and data size for time, never coverage."""

    quick: bool
    targets: str = "gpu,cpu,arm"
    samples: int = 8
    calibration: int = 32
    task: int = 48
    repeats: int = 3  # independent paired measurements per contender
    warmup: int = 5
    max_pairs: int = 40
    budget_s: float = 12.0  # per contender and repeat (the timed blocks)
    target_halfwidth: float = 0.02
    peak_n: int = 2048
    peak_repeats: int = 15
    olive_workflows: tuple[str, ...] = ("ort-int8", "ov-int8")
    drop_backends: tuple[tuple[str, str], ...] = ()  # (target, backend) variants not built
    drop_variants: tuple[tuple[str, str], ...] = ()  # (target, variant) not built
    extra_sets: tuple[str, ...] = ()  # more --set overrides for every build

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if not quick:
            return cls(quick=False)
        return cls(
            quick=True,
            samples=4,
            calibration=8,
            task=16,
            repeats=2,
            warmup=3,
            max_pairs=30,
            budget_s=6.0,
            peak_n=1024,
            peak_repeats=8,
            olive_workflows=("ort-int8",),
            drop_backends=(("gpu", "tvm"), ("cpu", "tvm"), ("arm", "tvm")),
            drop_variants=(("gpu", "trt-int8"), ("arm", "ort-int8"), ("arm", "ov-int8")),
            extra_sets=("cpu.quantize.accuracy_aware.enabled=false",),
        )

    def latency_policy(self) -> LatencyPolicy:
        """The method perf times with: the packages' own, with the run's budget."""
        return LatencyPolicy(
            warmup=self.warmup,
            runs=self.max_pairs,
            max_seconds=self.budget_s,
            target_halfwidth=self.target_halfwidth,
            stop_when_slower=False,  # a benchmark reports every interval to its full width
        )

    def note(self) -> str:
        base = (
            f"Data: {self.samples} parity samples, {self.calibration} calibration feeds, up "
            f"to {self.task} task items per real model."
        )
        if not self.quick:
            return base + " Full run."
        full = Plan(quick=False)
        labels = {
            "repeats": "repeats",
            "max_pairs": "most block pairs per measurement",
            "budget_s": "seconds of blocks per measurement",
            "warmup": "warm-up runs",
            "calibration": "calibration feeds",
            "samples": "parity samples",
            "task": "task items",
            "peak_n": "peak matrix size",
            "peak_repeats": "peak runs",
        }
        changed = [
            f"{text} {getattr(full, k)}->{getattr(self, k)}"
            for k, text in labels.items()
            if getattr(full, k) != getattr(self, k)
        ]
        dropped_wf = sorted(set(full.olive_workflows) - set(self.olive_workflows))
        if dropped_wf:
            changed.append(f"Olive's {', '.join(dropped_wf)} workflow")
        for target, backend in self.drop_backends[:1]:
            changed.append(
                f"the {target} target's {backend} variants from every build (CUDA code "
                "generation took 190-310 s per variant and model on the 2-core host, "
                "and a host without a GPU cannot run them)"
            )
        if any(t == "cpu" and b == "tvm" for t, b in self.drop_backends):
            changed.append(
                "the cpu and arm targets' tvm variants (untuned TVM builds took 60-250 s per "
                "model and ran 10-100x slower than the reference in the full run)"
            )
        for target, variant in self.drop_variants:
            changed.append(f"{target}/{variant}")
        for item in self.extra_sets:
            changed.append(f"--set {item} (the accuracy-aware int8 loop took 150 s on bert)")
        return base + (
            " --quick, against the full run: "
            + "; ".join(changed)
            + ". Every model and every build kind is still run."
        )


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def pick_one_change(targets: list[str]) -> str:
    for cand in ONE_CHANGE:
        try:
            resolve_config({}, targets, [cand])
            return cand
        except ConfigError:
            continue
    raise SystemExit(f"none of {ONE_CHANGE} applies to the default pipelines of {targets}")


def dropped_variants(plan: Plan) -> tuple[str, ...]:
    """`--set T.V.enabled=false` for the variants --quick leaves out of every build."""
    targets = plan.targets.split(",")
    cfg = resolve_config({}, targets)
    out = []
    for target, backend in plan.drop_backends:
        variants = cfg.targets[target].variants or {} if target in cfg.targets else {}
        out += [
            f"{target}.{name}.enabled=false"
            for name, v in sorted(variants.items())
            if v.compile.backend == backend
        ]
    for target, variant in plan.drop_variants:
        if target in cfg.targets and variant in (cfg.targets[target].variants or {}):
            out.append(f"{target}.{variant}.enabled=false")
    return tuple(out) + plan.extra_sets


def parse_models(text: str, known: Collection[str]) -> list[str]:
    """`--models a,b` as a list; ValueError naming the unknown ones and the known."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown models {unknown}; known: {list(known)}")
    return names
