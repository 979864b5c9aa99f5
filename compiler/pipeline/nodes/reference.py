"""reference: the normalized fp32 model's outputs on the samples (ONNX Runtime CPU), which
every artifact's parity is measured against; and where outputs are indices (an ArgMax's, a
TopK's), the scores they were picked from (compiler/pipeline/index_scores.py), which parity
reads to tell decided flips from ties."""

from __future__ import annotations

from pathlib import Path

import onnx

from compiler.core.feeds import Feeds, write_feeds_npz
from compiler.core.parity import SCORES_FILE, pack_scores
from compiler.core.records import ReferenceOutput
from compiler.pipeline.graph import ReferenceNode
from compiler.pipeline.index_scores import index_sources, reference_scores, scores_model
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
        outputs = [
            dict(zip(names, sess.run(names, feed), strict=True))
            for feed in ctx.feeds(node.data, "samples")
        ]
        write_feeds_npz(out / "outputs.npz", outputs)
        _write_scores(ctx.model_path(node.normalize), names, ctx.feeds(node.data, "samples"), out)
        return ReferenceOutput(
            runtime=f"onnxruntime {ort.__version__}",
            provider="CPUExecutionProvider",
            precision="fp32",
            samples=len(outputs),
        )


def _write_scores(model_path: Path, names: list[str], feeds: list[Feeds], out: Path) -> None:
    """SCORES_FILE in `out` where the model has index outputs and their scores fit
    (index_scores.MAX_ELEMENTS); nothing otherwise, and for a model with external data (over
    2 GB: a copy returning the scores would be another 2 GB)."""
    from targets.onnxruntime.backend import reference_session

    model = onnx.load(model_path, load_external_data=False)
    sources = index_sources(model)
    if not sources or any(
        init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer
    ):
        return
    path = out / "scores.onnx"
    path.write_bytes(scores_model(model, sources).SerializeToString())
    try:
        scores = reference_scores(reference_session(path), names, sources, feeds)
    except Exception:  # noqa: BLE001 - without scores, exact agreement judges: never the build
        scores = None
    finally:
        path.unlink()
    if scores is not None:
        write_feeds_npz(out / SCORES_FILE, pack_scores(scores))
