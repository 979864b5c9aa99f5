"""compile: one variant's artifact, built by its backend from its source's model file (backends
take paths); a backend missing on this host makes the node a skip that says how to get it."""

from __future__ import annotations

import tempfile
from pathlib import Path

from compiler.core.records import Availability, CompileOutput, NormalizeOutput
from compiler.pipeline.graph import CompileNode
from compiler.pipeline.nodes.base import KeyMaterial, Kind
from compiler.pipeline.nodes.context import NodeContext
from compiler.pipeline.variant import lossiest
from targets.registry import BuildRequest, get_backend

__all__ = ["CompileKind"]


class CompileKind(Kind[CompileNode]):
    # 3: CompileOutput records the artifact's own contract (fixed-shape libraries); 4: int8
    # when the source is already quantized
    version = "4"

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
        }

    def skip(self, node: CompileNode, ctx: NodeContext) -> Availability | None:
        available = get_backend(node.config.compile.backend).availability(node.target)
        return None if available.ok else available

    def run(self, node: CompileNode, ctx: NodeContext, out: Path) -> CompileOutput:
        v = node.config
        cls = get_backend(v.compile.backend)
        # an artifact computes at least as lossily as its source (int8 for a quantized model)
        source = ctx.output(node.normalize, NormalizeOutput).precision
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            request = BuildRequest(
                target=node.target,
                variant=node.variant,
                precision=lossiest([v.precision, source]),
                options=v.compile,
                contract=ctx.contract(node.normalize),
                workdir=Path(tmp),
                calibration=lambda: ctx.feeds(node.data, "calibration"),
                calibration_source=ctx.calibration_source(node.data),
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
