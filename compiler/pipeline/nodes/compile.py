"""compile: one variant's artifact, built by its backend from its source's model file (backends
take paths); a backend missing on this host makes the node a skip that says how to get it.

A backend that chooses between builds by accuracy (`Backend.judged`: OpenVINO bf16 keeping the
layers bf16 cannot compute in f32) gets the package's gate of the variant's precision as its
`judge`, on user data only: a choice fitted to generated noise would be judged on noise too.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import onnx

from compiler.core.records import Availability, CompileOutput, DataOutput, NormalizeOutput
from compiler.pipeline.graph import CompileNode
from compiler.pipeline.nodes.base import KeyMaterial, Kind
from compiler.pipeline.nodes.context import NodeContext
from compiler.pipeline.nodes.passes import gate_material, pass_context
from compiler.pipeline.variant import lossiest
from passes.accuracy import Gate, GateResult, Gates, make_gates
from targets.base import Judgement, SearchShare
from targets.registry import BuildRequest, get_backend

__all__ = ["CompileKind"]


class CompileKind(Kind[CompileNode]):
    # 3: CompileOutput records the artifact's own contract (fixed-shape libraries); 4: int8
    # when the source is already quantized; 5: a judged backend gets the gate; 6: and judges the
    # unchanged build on every labelled sample, a search on the first half
    version = "6"

    def key(self, node: CompileNode, ctx: NodeContext) -> KeyMaterial:
        v = node.config
        cls = get_backend(v.compile.backend)
        return {
            "backend": cls.name,
            "version": cls.version,
            "options": v.compile.model_dump(mode="json"),
            "target": node.target,
            "variant": node.variant,
            "precision": v.precision,
            "source_precision": ctx.output(node.normalize, NormalizeOutput).precision,
            "contract": ctx.contract_key(node.normalize, kinds=False),
            "libs": cls.library_versions(),
            # a judged build runs on this host and is judged there: its CPU features too
            "gate": {"bounds": gate_material(v.precision, ctx), "isa": list(ctx.host.isa)}
            if cls.judged(v.compile)
            else None,
        }

    def skip(self, node: CompileNode, ctx: NodeContext) -> Availability | None:
        available = get_backend(node.config.compile.backend).availability(node.target)
        return None if available.ok else available

    def run(self, node: CompileNode, ctx: NodeContext, out: Path) -> CompileOutput:
        v = node.config
        cls = get_backend(v.compile.backend)
        # an artifact computes at least as lossily as its source (int8 for a quantized model)
        source = ctx.output(node.normalize, NormalizeOutput).precision
        precision = lossiest([v.precision, source])
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            judge = _judge(node, ctx, precision, Path(tmp)) if cls.judged(v.compile) else None
            request = BuildRequest(
                target=node.target,
                variant=node.variant,
                precision=precision,
                options=v.compile,
                contract=ctx.contract(node.normalize),
                workdir=Path(tmp),
                calibration=lambda: ctx.feeds(node.data, "calibration"),
                calibration_source=ctx.calibration_source(node.data),
                judge=judge,
                cache_root=ctx.inputs.cache_root,
            )
            result = cls().build(ctx.model_path(node.source), request, out)
        return CompileOutput(
            backend=cls.name,
            backend_version=cls.library_versions(),
            files=sorted(result.files),
            runtime=result.runtime,
            requirements=result.requirements,
            precision=result.precision,
            notes=result.notes,
            portable=result.portable,
            status=result.status,  # type: ignore[arg-type]
            contract=result.contract,
        )


# calibration feeds a judge without labelled samples runs on: each try of a judged build runs
# them all, and 32 rows still resolve bf16's 95 % top-1 bound (one miss in 20 and more)
JUDGE_SAMPLES = 32


class _GateJudge:
    """passes/accuracy.py's gates in the shape backends take (targets/base.py `Judge`)."""

    def __init__(self, gates: Gates) -> None:
        self.gates = gates
        self.feeds = gates.whole.feeds

    def __call__(self, outputs: list[dict[str, np.ndarray]]) -> Judgement:
        return _judgement(self.gates.whole.judge(outputs))

    def share(self, outputs: list[dict[str, np.ndarray]]) -> SearchShare | None:
        check = self.gates.check_outputs(outputs)
        if check.blind:
            return None
        n, total = len(self.gates.search.feeds), len(self.feeds)
        judge = partial(_judged, check.gate)
        if check.gate is self.gates.search:
            return SearchShare(0, n, f"the first {n}" if n < total else "", judge)
        return SearchShare(n, total, f"the last {total - n}", judge)


def _judged(gate: Gate, outputs: list[dict[str, np.ndarray]]) -> Judgement:
    return _judgement(gate.judge(outputs))


def _judgement(result: GateResult) -> Judgement:
    said = [f"{name}: {o['failures'][0]}" for name, o in result.outputs.items() if o["failures"]]
    task = result.task
    if task is not None and task.artifact is not None and task.reference is not None:
        said.insert(0, f"task {task.artifact:.4g} vs the reference's {task.reference:.4g}")
    return Judgement(result.passed, result.margin, "; ".join(said) or "within every bound")


def _judge(node: CompileNode, ctx: NodeContext, precision: str, scratch: Path) -> _GateJudge | None:
    """The gates of `precision` on the build's user data (the labelled samples with the task,
    a search on their first half; else up to JUDGE_SAMPLES calibration feeds); None where
    either data set was generated (nothing to judge a choice on)."""
    data = ctx.output(node.data, DataOutput)
    if data.samples_source == "generated" or data.calibration_source == "generated":
        return None
    pctx = pass_context(ctx, node.normalize, node.data, node.target, scratch)
    model = onnx.load(str(ctx.model_path(node.normalize)), load_external_data=False)
    return _GateJudge(
        make_gates(model, pctx, pctx.calibration()[:JUDGE_SAMPLES], precision=precision)
    )
