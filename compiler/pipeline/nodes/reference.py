"""reference: the normalized fp32 model's outputs on the samples (ONNX Runtime CPU), which
every artifact's parity is measured against; and where outputs are indices (an ArgMax's, a
TopK's), the scores they were picked from (compiler/pipeline/index_scores.py), which parity
reads to tell decided flips from ties."""

from __future__ import annotations

from pathlib import Path

from compiler.core.feeds import write_feeds_npz
from compiler.core.parity import SCORES_FILE, pack_scores
from compiler.core.records import ReferenceOutput
from compiler.pipeline.graph import ReferenceNode
from compiler.pipeline.index_scores import scores_of
from compiler.pipeline.nodes.base import KeyMaterial, Kind
from compiler.pipeline.nodes.context import NodeContext
from compiler.pipeline.probe import reference_for

__all__ = ["ReferenceKind"]


class ReferenceKind(Kind[ReferenceNode]):
    version = "3"

    def key(self, node: ReferenceNode, ctx: NodeContext) -> KeyMaterial:
        import onnxruntime as ort

        return {"libs": {"onnxruntime": ort.__version__}}

    def run(self, node: ReferenceNode, ctx: NodeContext, out: Path) -> ReferenceOutput:
        import onnxruntime as ort

        sess = reference_for(ctx.model_path(node.normalize), ctx.inputs.source_path.name)
        names = [o.name for o in ctx.contract(node.normalize).outputs]
        samples = ctx.feeds(node.data, "samples")
        outputs = [dict(zip(names, sess.run(names, feed), strict=True)) for feed in samples]
        write_feeds_npz(out / "outputs.npz", outputs)
        scores = scores_of(ctx.out_dir(node.normalize), names, samples)
        if scores is not None:
            write_feeds_npz(out / SCORES_FILE, pack_scores(scores))
        return ReferenceOutput(
            runtime=f"onnxruntime {ort.__version__}",
            provider="CPUExecutionProvider",
            precision="fp32",
            samples=len(outputs),
        )
