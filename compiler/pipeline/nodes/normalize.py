"""normalize: the source model, checked, opset-upgraded, dims named, saved deterministically;
its interface contract is read off the result: the value domains the graph states for its
inputs, and a range for every input dim (the config's, the batch default, or probed on the
reference, around the size most of the user's data has). A dim no size can be found for
stops the build here, before any compile."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from compiler.core.errors import ContractError
from compiler.core.records import NormalizeOutput, NormalizeRecord
from compiler.pipeline.data import resolve_domains
from compiler.pipeline.domains import infer_domains
from compiler.pipeline.graph import NormalizeNode
from compiler.pipeline.index_scores import write_scores_model
from compiler.pipeline.interface import as_returned, extract_contract
from compiler.pipeline.nodes.base import KeyMaterial, Kind
from compiler.pipeline.nodes.context import NodeContext
from compiler.pipeline.normalize import MODEL_FILE, load_onnx, normalize_model, save_model
from compiler.pipeline.output_kinds import with_output_kinds
from compiler.pipeline.probe import (
    BUDGET_S,
    CANDIDATES,
    MAX_FACTOR,
    MAX_RUNS,
    range_dims,
    reference_for,
    returned_shapes,
)
from compiler.pipeline.userdata import data_shapes, observed_sizes
from passes.base import source_precision
from targets.onnxruntime.runtime import version as ort_version

__all__ = ["NormalizeKind"]


class NormalizeKind(Kind[NormalizeNode]):
    # 4: the source's precision (int8 for a quantized model); 5: fp16/bf16 too; 6: output
    # kinds read through (de)quantization and quantized ops; 7: opset imports made canonical;
    # 8: nodes put in topological order; 9: graph outputs with no shape get the inferred one
    # (and a STRING input's error names the file); 10: a lone MatMul/Gemm output is a
    # linear head, one beside the class distribution unknown; 11: outputs declared otherwise
    # than the reference returns them are declared as returned; 12: dims that move only
    # together (a decoder's past + new = total) are ranged together (probe.py); 13: an
    # unranged dim's opt is its most common size in the user's data, where there is some;
    # 14: initializers listed as graph inputs too are taken out of the inputs, and
    # model-local functions are inlined; 15: a source with com.microsoft's weight-only ops
    # (4-bit MatMulNBits) is a quantized one; 16: outputs a random draw reaches are `sampled`;
    # 17: nodes that share a name are given names of their own; 18: a batch default is
    # checked at 2 (a model that runs at batch 1 only gets 1..1); 19: a probed dim's step
    # (sizes opt +- a multiple of it), and dims that must be equal (`equal_dims`); 20: a
    # probability scaled or shifted is no probability (output kinds), and weights held in
    # Constant nodes count for the source's precision (a paddle2onnx model in fp16), and a dim
    # no usual size fits is tried at the sizes the graph's shape constants state, and a
    # dilated SAME convolution at stride 1 gets explicit pads (ONNX Runtime refuses it), and
    # GatherElements/ScatterElements indices take their axis' size as a domain; 23: sequence
    # lengths (LSTM/GRU/RNN sequence_lens, ReverseSequence) range 1..their sequence's length,
    # a time-major recurrent input's axis 0 is no batch, and sizes whose outputs contradict
    # a batch dim are rejections (probe.py `_first_consistent`), and a step holds on both
    # sides of opt
    version = "24"

    def key(self, node: NormalizeNode, ctx: NodeContext) -> KeyMaterial:
        cfg = ctx.config
        return {
            "source": ctx.inputs.source_digest,
            "normalize": cfg.normalize.model_dump(),
            "dims": {k: v.model_dump() for k, v in cfg.dims.items()},
            "inputs": {k: v.model_dump(mode="json") for k, v in cfg.inputs.items()},  # probing
            "probe": [list(CANDIDATES), MAX_FACTOR, MAX_RUNS, BUDGET_S],
            "kinds": dict(cfg.parity.kinds),
            "libs": {"onnx": onnx.__version__, "onnxruntime": ort_version()},
            # the shapes of the user's data (headers only): its sizes are the dims' opts
            "data_shapes": sorted(map(_shapes_only, _data_shapes(ctx).values())),
        }

    def run(self, node: NormalizeNode, ctx: NodeContext, out: Path) -> NormalizeOutput:
        cfg, source = ctx.config, ctx.inputs.source_path
        model, record = normalize_model(load_onnx(source), source.name, cfg.normalize.min_opset)
        try:
            contract = extract_contract(model, cfg.dims, record["named_dims"])
        except ContractError as exc:
            raise ContractError(f"{source.name}: {exc}") from None
        inferred = infer_domains(model, contract.inputs)
        contract.inputs = [
            t.model_copy(update={"domain": inferred.get(t.name)}) for t in contract.inputs
        ]
        domains = resolve_domains(contract, cfg.inputs)
        save_model(model, out)
        reference = reference_for(out / MODEL_FILE, source.name)  # loaded once for both
        observed = observed_sizes(_data_shapes(ctx), contract)
        contract = range_dims(
            out / MODEL_FILE, contract, domains, source.name, reference, observed=observed
        )
        returned = returned_shapes(out / MODEL_FILE, contract, domains, source.name, reference)
        del reference
        if returned:
            contract, record["output_shapes_corrected"] = as_returned(model, contract, returned)
            save_model(model, out)
        contract = with_output_kinds(contract, model, cfg.parity.kinds)
        write_scores_model(model, out)  # where outputs are indices: the reference's scores
        ctx.hold(node.id, model, out)
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        return NormalizeOutput(
            record=NormalizeRecord.model_validate(record),
            contract=contract,
            opset=opset,
            ir_version=model.ir_version,
            producer=f"{model.producer_name} {model.producer_version}".strip(),
            precision=source_precision(model),
        )


def _data_shapes(ctx: NodeContext) -> dict[str, dict[str, list[int]]]:
    """The array shapes of the user's sample and calibration files (a data loader's feeds
    are made after the contract, so they range nothing)."""
    given = [p for p in (ctx.inputs.sample_data, ctx.inputs.calibration_data) if p is not None]
    return data_shapes(given)


def _shapes_only(arrays: dict[str, list[int]]) -> str:
    """One file's array shapes as a key: the file's name and content do not range a dim."""
    return json.dumps(arrays, sort_keys=True)
