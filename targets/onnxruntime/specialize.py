"""Guarded specializations: the model bound to the values its `If` selectors take.

An input that only decides which branch of an `If` runs (an audio model's sample rate tested
for `== 16000`, a decoder's `use_cache_branch` flag) costs ONNX Runtime at every call: each
`If` runs its branch as a subgraph of its own (a session state, its own allocations, no fusion
across the boundary), and nested ones nest that cost. Where the contract states a small set of
values for such an input (compiler/pipeline/domains.py reads them off the graph; a config can
name them), the ONNX Runtime artifact also carries the model with the input bound to each of
those values and its `If`s folded (onnxscript's optimizer: constant folding, then inlining of
every `If` whose condition became a constant). The artifact keeps the general model: the runner
(runtime.py) runs a specialization only for a call whose bound inputs hold exactly its values
and runs the general model for every other call, so the artifact accepts all the contract
does. This is a guard, as TorchDynamo's are: the check is one comparison per bound input.

Measured on silero_vad (7 nested `If` per call; 2-vCPU AMD EPYC, avx512-bf16 class, ONNX
Runtime 1.32, best of 5 blocks of 2000 calls): the general model 57-58 us per call, bound to
`sr == 16000` 43-45 us (1.3x); the specialization's outputs are the general model's bits.

A binding is kept only where it folds at least one `If`; none is made for a model whose
weights live in external data (it would copy them) or where the combinations would be more
than `MAX_SPECIALIZATIONS`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from compiler.core.contract import Contract, TensorSpec
from compiler.core.errors import short_message
from compiler.core.graphs import graphs, nodes
from compiler.core.settings import OnnxRuntimeSpecialization

__all__ = [
    "MAX_SPECIALIZATIONS",
    "Binding",
    "bindings",
    "count_ifs",
    "describe_all",
    "file_name",
    "specialize",
]

MAX_SPECIALIZATIONS = 4
_MAX_VALUES = 2  # values per bound input
_BINDABLE = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}


@dataclass(frozen=True)
class Binding:
    """Values for some inputs, one each (in the contract's input order)."""

    inputs: tuple[str, ...]
    values: tuple[int | float, ...]

    def describe(self) -> str:
        return _describe(self.inputs, self.values)


def _describe(inputs: Sequence[str], values: Sequence[int | float]) -> str:
    return ", ".join(f"{n} == {v}" for n, v in zip(inputs, values, strict=True))


def _scalar(spec: TensorSpec) -> bool:
    return all(d == 1 for d in spec.shape)  # rank 0, or every dim a fixed 1


def bindings(contract: Contract) -> list[Binding]:
    """Every combination of the values the contract states for its scalar integer/bool inputs
    (at most `_MAX_VALUES` each); none where there would be more than MAX_SPECIALIZATIONS."""
    chosen = [
        (spec.name, spec.domain.values)
        for spec in contract.inputs
        if spec.dtype in _BINDABLE
        and _scalar(spec)
        and spec.domain is not None
        and spec.domain.values is not None
        and len(spec.domain.values) <= _MAX_VALUES
    ]
    if not chosen:
        return []
    combos = list(itertools.product(*(values for _, values in chosen)))
    if len(combos) > MAX_SPECIALIZATIONS:
        return []
    names = tuple(name for name, _ in chosen)
    return [Binding(names, tuple(combo)) for combo in combos]


def count_ifs(model: onnx.ModelProto) -> int:
    """`If` nodes in the model, nested ones included."""
    return sum(n.op_type == "If" for n in nodes(model.graph))


def _bind(model: onnx.ModelProto, binding: Binding) -> onnx.ModelProto:
    """A copy with each bound input replaced by an initializer holding its value."""
    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    graph = bound.graph
    for name, value in zip(binding.inputs, binding.values, strict=True):
        (vi,) = [i for i in graph.input if i.name == name]
        elem = vi.type.tensor_type.elem_type
        dims = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
        graph.input.remove(vi)
        graph.initializer.append(numpy_helper.from_array(np.full(dims, value, dtype=dtype), name))
    return bound


def specialize(model_path: Path, binding: Binding, out_path: Path) -> tuple[int, str]:
    """Writes the model at `model_path` bound to `binding`, its Ifs folded, to `out_path`.
    Returns (If nodes folded, why not where 0: nothing is written then)."""
    model = onnx.load(str(model_path), load_external_data=False)
    if any(
        t.data_location == onnx.TensorProto.EXTERNAL
        for g in graphs(model.graph)
        for t in g.initializer
    ):
        return 0, "its weights are in external data (a specialization would copy them)"
    before = count_ifs(model)
    if not before:
        return 0, "it has no If"
    try:
        import onnxscript.optimizer as optimizer
    except ImportError as exc:
        return 0, f"onnxscript is not installed ({exc}): pip install 'onnxscript>=0.2'"
    try:
        folded = optimizer.optimize(_bind(model, binding))
    except Exception as exc:  # the optimizer's own error types; the general model stays
        return 0, f"onnxscript's optimizer failed: {short_message(exc, 200)}"
    after = count_ifs(folded)
    if after >= before:
        return 0, f"binding {binding.describe()} folds no If"
    onnx.save(folded, str(out_path))
    return before - after, ""


def file_name(model: str, index: int) -> str:
    """`model.onnx` -> `model.special-0.onnx`."""
    stem = model[: -len(".onnx")] if model.endswith(".onnx") else model
    return f"{stem}.special-{index}.onnx"


def describe_all(specs: Sequence[OnnxRuntimeSpecialization]) -> str:
    """The artifact's note: what each specialization folded."""
    parts = [f"{_describe(s.inputs, s.values)} ({s.folded} If folded)" for s in specs]
    return "specialized for " + "; ".join(parts) + ": other values run the general graph"
