"""normalize: the source model, checked, opset-upgraded, dims named, saved deterministically;
its interface contract is read off the result."""

from __future__ import annotations

from pathlib import Path

import onnx

from compiler.core.records import NormalizeOutput, NormalizeRecord
from compiler.pipeline.graph import NormalizeNode
from compiler.pipeline.interface import extract_contract
from compiler.pipeline.nodes.base import KeyMaterial, Kind
from compiler.pipeline.nodes.context import NodeContext
from compiler.pipeline.normalize import load_onnx, normalize_model, save_model
from compiler.pipeline.output_kinds import with_output_kinds

__all__ = ["NormalizeKind"]


class NormalizeKind(Kind[NormalizeNode]):
    version = "2"

    def key(self, node: NormalizeNode, ctx: NodeContext) -> KeyMaterial:
        cfg = ctx.config
        return {
            "source": ctx.inputs.source_digest,
            "normalize": cfg.normalize.model_dump(),
            "dims": {k: v.model_dump() for k, v in cfg.dims.items()},
            "kinds": dict(cfg.parity.kinds),
            "libs": {"onnx": onnx.__version__},
        }

    def run(self, node: NormalizeNode, ctx: NodeContext, out: Path) -> NormalizeOutput:
        cfg, source = ctx.config, ctx.inputs.source_path
        model, record = normalize_model(load_onnx(source), source.name, cfg.normalize.min_opset)
        contract = extract_contract(model, cfg.dims)
        contract = with_output_kinds(contract, model, cfg.parity.kinds)
        save_model(model, out)
        ctx.hold(node.id, model, out)
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        return NormalizeOutput(
            record=NormalizeRecord.model_validate(record),
            contract=contract,
            opset=opset,
            ir_version=model.ir_version,
            producer=f"{model.producer_name} {model.producer_version}".strip(),
        )
