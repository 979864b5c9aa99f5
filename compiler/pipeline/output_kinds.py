"""What each output of a model means (class scores, probabilities, an embedding, a dense map,
boxes, a state...), read off the graph where it says so and overridden by the config
(`parity.kinds`). The kind decides how parity judges the output (compiler/core/parity.py)."""

from __future__ import annotations

from collections.abc import Mapping

import onnx

from compiler.core.contract import Contract, OutputKind
from compiler.core.errors import ConfigError

__all__ = ["infer_output_kinds", "with_output_kinds"]


def infer_output_kinds(model: onnx.ModelProto, contract: Contract) -> dict[str, OutputKind]:
    """Output name -> kind, for the outputs whose kind the graph shows."""
    return {}


def with_output_kinds(
    contract: Contract, model: onnx.ModelProto, configured: Mapping[str, OutputKind]
) -> Contract:
    """`contract` with every output's kind: the config's, else the graph's, else unknown."""
    unknown = sorted(set(configured) - {o.name for o in contract.outputs})
    if unknown:
        raise ConfigError(
            f"parity.kinds names outputs {unknown} the model does not have; its outputs are "
            f"{[o.name for o in contract.outputs]}"
        )
    inferred = infer_output_kinds(model, contract)
    outputs = [
        o.model_copy(update={"kind": configured.get(o.name) or inferred.get(o.name)})
        for o in contract.outputs
    ]
    return contract.model_copy(update={"outputs": outputs})
