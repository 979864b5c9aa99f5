"""Checks on the source model before any pass runs: each problem is one `InputModelError` (exit
2) naming the file, tensor, node or dim at fault and what to do, instead of a failure deep in
a pass or a backend minutes later.

Checked: the file is there and not empty; it parses as an ONNX model (read without its
external data, so models of any size are checked in a moment); every external-data reference
stays beside the model (relative, no `..`), names an existing file and lies inside it; every
graph input has a tensor type with a shape and no 0-sized dim; every node's domain is one the
ONNX and ONNX Runtime operator sets know or a function the model defines. A model whose
protobuf exceeds 2 GB must keep its weights in external data (protobuf cannot hold it), and is
checked by `onnx.checker` on the file, which reads external data itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import onnx
from onnx import external_data_helper

from compiler.core.errors import InputModelError
from compiler.pipeline.normalize import Source

__all__ = ["KNOWN_DOMAINS", "ModelFacts", "preflight_model", "preflight_source"]

_TWO_GB = 2**31 - 1
# operator set domains ONNX and ONNX Runtime implement (ORT's contrib and internal ops)
KNOWN_DOMAINS = frozenset(
    {
        "",
        "ai.onnx",
        "ai.onnx.ml",
        "ai.onnx.preview",
        "ai.onnx.preview.training",
        "com.microsoft",
        "com.microsoft.nchwc",
        "com.microsoft.experimental",
        "com.ms.internal.nhwc",
    }
)


@dataclass(frozen=True)
class ModelFacts:
    """What preflight learned: sizes, and whether the model keeps weights in external data."""

    model_bytes: int
    external_bytes: int
    external_files: tuple[str, ...]

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.external_bytes


def _fail(path: Path, what: str) -> InputModelError:
    return InputModelError(f"{path}: {what}")


def _read(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise _fail(path, "no such file; give the path of an .onnx model")
    size = path.stat().st_size
    if size == 0:
        raise _fail(path, "the file is empty (0 bytes); export the model again")
    try:
        return onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends: not an ONNX file
        first = " ".join(str(exc).split())[:200]
        raise _fail(
            path, f"not an ONNX model ({type(exc).__name__}: {first}); give an .onnx file"
        ) from None


def _external_data(path: Path, model: onnx.ModelProto) -> tuple[int, tuple[str, ...]]:
    """Check every external-data reference; (bytes referenced, files)."""
    sizes: dict[str, int] = {}
    used = 0
    for t in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(t):
            continue
        info = external_data_helper.ExternalDataInfo(t)
        loc = info.location or ""
        parts = PurePosixPath(loc.replace("\\", "/")).parts
        if not loc or os.path.isabs(loc) or PurePosixPath(loc).is_absolute() or ".." in parts:
            raise _fail(
                path,
                f"tensor '{t.name}' keeps its data at {loc!r}, outside the model's folder; "
                "external data must be a relative path beside the model",
            )
        data = path.parent / loc
        if loc not in sizes:
            if not data.is_file() or data.is_symlink():
                raise _fail(
                    path,
                    f"tensor '{t.name}': external data file {loc} is missing (or not a regular "
                    f"file) in {path.parent}; keep it beside the model",
                )
            sizes[loc] = data.stat().st_size
        offset = int(info.offset or 0)
        length = int(info.length or 0) if info.length is not None else sizes[loc] - offset
        if offset < 0 or length < 0 or offset + length > sizes[loc]:
            raise _fail(
                path,
                f"tensor '{t.name}': external data {loc} bytes {offset}..{offset + length} lie "
                f"past its end ({sizes[loc]} bytes); the data file is truncated or not this "
                "model's",
            )
        used += length
    return used, tuple(sorted(sizes))


def _inputs(path: Path, model: onnx.ModelProto) -> None:
    initializers = {i.name for i in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in initializers]
    if not inputs:
        raise _fail(path, "the graph has no inputs; export the model with its inputs")
    for vi in inputs:
        where = f"graph input '{vi.name}'"
        if not vi.type.HasField("tensor_type"):
            raise _fail(
                path, f"{where} is not a tensor (sequence/map/optional inputs are not supported)"
            )
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            raise _fail(
                path,
                f"{where} has no shape (not even its rank); re-export the model with input "
                "shapes, e.g. torch.onnx.export(..., input_names=..., dynamic_axes=...)",
            )
        for axis, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value == 0:
                raise _fail(
                    path,
                    f"{where} axis {axis} is 0-sized; a model cannot be checked or timed on "
                    "empty tensors: give the dim its real size or a name (dynamic)",
                )


def _all_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Every node: the graph's, its subgraphs' (If, Loop, Scan) and the model's functions'."""
    stack: list[Iterable[onnx.NodeProto]] = [model.graph.node, *(f.node for f in model.functions)]
    while stack:
        for node in stack.pop():
            yield node
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g.node)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(g.node for g in attr.graphs)


def _domains(path: Path, model: onnx.ModelProto) -> None:
    local = {f.domain for f in model.functions}
    functions = {(f.domain, f.name) for f in model.functions}
    for node in _all_nodes(model):
        if node.domain not in KNOWN_DOMAINS and node.domain not in local:
            raise _fail(
                path,
                f"node '{node.name or node.op_type}' ({node.op_type}) is in the operator domain "
                f"'{node.domain}', which neither ONNX nor ONNX Runtime implements; replace the "
                "op or export it as standard ONNX ops",
            )
        if node.domain in _ONNX_DOMAINS and (node.domain, node.op_type) not in functions:
            _known_op(path, model, node)


# the domains whose operators onnx.defs lists (ONNX Runtime's own are its business)
_ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})


def _known_op(path: Path, model: onnx.ModelProto, node: onnx.NodeProto) -> None:
    """A standard-domain node whose op ONNX does not define, or not yet at the model's opset:
    an exporter's leftover (tf2onnx writes a TensorFlow Lite op it cannot convert, such as
    TFL_Convolution2DTransposeBias, as a node of the default domain) or an opset too old."""
    domain = "" if node.domain == "ai.onnx" else node.domain
    name = f"node '{node.name or node.op_type}' ({node.op_type})"
    if not onnx.defs.has(node.op_type, domain):
        raise _fail(
            path,
            f"{name} is not an ONNX operator{' of ' + domain if domain else ''}: the exporter "
            "left a framework op unconverted; export the model with that layer replaced by "
            "standard ops (or convert it with a converter that supports it)",
        )
    imports = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    imported = imports.get(domain, 0)
    if not imported:
        return  # no opset for its domain: onnx.checker says so
    try:
        onnx.defs.get_schema(node.op_type, imported, domain)
    except onnx.defs.SchemaError:
        since = min(
            s.since_version
            for s in onnx.defs.get_all_schemas_with_history()
            if s.name == node.op_type and s.domain == domain
        )
        raise _fail(
            path,
            f"{name} came in opset {since}{' of ' + domain if domain else ''}, and the model "
            f"imports opset {imported}; export it with opset {since} or later",
        ) from None


def _outputs(path: Path, model: onnx.ModelProto) -> None:
    """Every graph output a tensor: a deployment package's outputs are arrays, and a
    sequence or map has no parity metric. skl2onnx ends classifiers in a ZipMap (a sequence
    of maps, one per row) unless told not to."""
    producers = {o: n for n in model.graph.node for o in n.output}
    for vi in model.graph.output:
        if vi.type.HasField("tensor_type"):
            continue
        kind = str(vi.type.WhichOneof("value") or "untyped value").replace("_type", "")
        kind = kind.replace("_", " ")
        node = producers.get(vi.name)
        made = f" (made by {node.op_type} node '{node.name}')" if node is not None else ""
        hint = (
            "; export the classifier without it (skl2onnx: options={id(model): {'zipmap': False}}) "
            "to get its probabilities as a tensor"
            if node is not None and node.op_type == "ZipMap"
            else "; export the model with tensor outputs"
        )
        raise _fail(path, f"graph output '{vi.name}' is a {kind}, not a tensor{made}{hint}")


def preflight_model(path: Path) -> ModelFacts:
    """Check the source model at `path`; InputModelError (exit 2) naming the first problem."""
    model = _read(path)
    external, files = _external_data(path, model)
    if not model.graph.output:
        raise _fail(path, "the graph has no outputs; export the model with its outputs")
    _inputs(path, model)
    _outputs(path, model)
    _domains(path, model)
    model_bytes = path.stat().st_size
    if model_bytes + external > _TWO_GB:
        try:  # the checker on the file: it reads external data itself, no 2 GB protobuf
            onnx.checker.check_model(str(path))
        except Exception as exc:
            first = " ".join(str(exc).split())[:300]
            raise _fail(path, f"fails onnx.checker: {first}") from None
    return ModelFacts(model_bytes, external, files)


def preflight_source(source: Source) -> ModelFacts | None:
    """Check an ONNX source before any work (a torch source is exported by us: nothing to do)."""
    return preflight_model(source.onnx_path) if source.onnx_path is not None else None
