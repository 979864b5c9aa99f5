"""Normalize a source model into one canonical ONNX model.

Sources: an ONNX file (external-data files beside it are read too) or a PyTorch module given
as `package.module:factory` with an input spec, exported through `torch.onnx.export`.
Normalizing checks the model, upgrades opsets older than the configured floor, gives every
dynamic dim without a name of its own (unnamed, `?`, -1) a distinct name, runs shape
inference, and saves it deterministically.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import EncodeError

from compiler.core.errors import InputModelError
from compiler.core.graphs import graphs, nodes
from compiler.pipeline.interface import name_unnamed_dims
from passes.base import sort_topologically

__all__ = [
    "InputSpec",
    "Source",
    "drop_initializer_inputs",
    "explicit_same_pads",
    "export_torch",
    "inline_functions",
    "load_onnx",
    "normalize_model",
    "parse_input_spec",
    "save_model",
    "source_digest",
    "unique_node_names",
]

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
_TWO_GB = 2**31 - 1


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class Source:
    """What the user pointed at: an ONNX path, or a torch factory plus input specs."""

    onnx_path: Path | None = None
    torch_factory: str | None = None
    input_specs: tuple[InputSpec, ...] = ()

    def describe(self) -> str:
        return str(self.onnx_path) if self.onnx_path else f"torch:{self.torch_factory}"


_SPEC_RE = re.compile(r"^(?P<name>[^:]+):(?P<dtype>[a-z0-9]+):\[(?P<shape>[^\]]*)\]$")


def parse_input_spec(text: str) -> InputSpec:
    """`x:float32:[batch,3,224,224]` -> InputSpec; symbolic dims are names."""
    m = _SPEC_RE.match(text.strip())
    if not m:
        raise InputModelError(
            f"input spec {text!r}: expected NAME:DTYPE:[d0,d1,...], e.g. x:float32:[batch,3,224,224]"
        )
    dims: list[int | str] = []
    for d in m["shape"].split(","):
        d = d.strip()
        if d:
            dims.append(int(d) if d.isdigit() else d)
    return InputSpec(m["name"], m["dtype"], tuple(dims))


def _external_files(path: Path) -> list[Path]:
    model = onnx.load(path, load_external_data=False)
    files: set[Path] = set()
    for t in onnx.external_data_helper._get_all_tensors(model):
        if onnx.external_data_helper.uses_external_data(t):
            info = onnx.external_data_helper.ExternalDataInfo(t)
            files.add(path.parent / info.location)
    return sorted(files)


def source_digest(path: Path) -> str:
    """sha256 over the ONNX file and every external-data file it references."""
    h = hashlib.sha256()
    try:
        files = [path, *_external_files(path)]
    except Exception as exc:
        raise InputModelError(f"{path}: not a readable ONNX model ({exc})") from exc
    for f in files:
        if not f.is_file():
            raise InputModelError(
                f"{path}: external data file {f.name} is missing; keep it beside the model"
            )
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load_onnx(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise InputModelError(f"{path}: no such file; give the path of an .onnx model")
    try:
        return onnx.load(path, load_external_data=True)
    except FileNotFoundError as exc:
        raise InputModelError(
            f"{path}: external data file missing ({exc.filename}); keep data files beside the model"
        ) from exc
    except Exception as exc:  # protobuf DecodeError and friends
        raise InputModelError(
            f"{path}: not a valid ONNX model ({type(exc).__name__}: {exc})"
        ) from exc


# the size an example input gives a symbolic dim at axis 0 (a batch) and elsewhere (a
# length, an image side), where the config gives it no opt of 2 or more: torch.export takes
# a dim an example gives 0 or 1 as that constant, and a transformer exported at batch 1 and
# length 1 then ran at those sizes only (its attention's reshapes baked them in)
_EXAMPLE_BATCH, _EXAMPLE_LENGTH = 2, 64


def _example_size(dim: str, axis: int, dims_opt: dict[str, int]) -> int:
    opt = dims_opt.get(dim, 0)
    if opt >= 2:
        return opt
    return _EXAMPLE_BATCH if axis == 0 else _EXAMPLE_LENGTH


def export_torch(
    factory: str, specs: tuple[InputSpec, ...], dims_opt: dict[str, int]
) -> onnx.ModelProto:
    """Import `package.module:factory`, call it, export with torch.onnx.export."""
    try:
        import torch
    except ImportError as exc:
        raise InputModelError(
            "a PyTorch source needs torch: pip install 'compile-pkg[torch]' torch==2.13.0"
        ) from exc
    mod_name, _, attr = factory.partition(":")
    if not attr:
        raise InputModelError(f"torch source {factory!r}: expected package.module:factory")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InputModelError(f"torch source {factory!r}: cannot import ({exc})") from exc
    module = fn()
    if not isinstance(module, torch.nn.Module):
        raise InputModelError(
            f"torch source {factory!r}: factory returned {type(module).__name__}, not nn.Module"
        )
    if not specs:
        raise InputModelError(
            f"torch source {factory!r}: give --input-spec NAME:DTYPE:[dims] for each input"
        )
    module.eval()
    names = [s.name for s in specs]
    dynamic_axes = {
        s.name: {i: d for i, d in enumerate(s.shape) if isinstance(d, str)}
        for s in specs
        if any(isinstance(d, str) for d in s.shape)
    }

    def examples(size: Callable[[str, int], int]) -> tuple[Any, ...]:
        return tuple(
            torch.zeros(
                [d if isinstance(d, int) else size(d, axis) for axis, d in enumerate(s.shape)],
                dtype=getattr(torch, s.dtype),
            )
            for s in specs
        )

    args = examples(lambda d, axis: _example_size(d, axis, dims_opt))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export.onnx"
        try:
            _export(torch, module, args, names, dynamic_axes, out)
        except _ExportFailed as exc:
            if not dynamic_axes:
                raise InputModelError(f"torch.onnx.export failed for {factory}: {exc}") from None
            try:  # a module that takes no other size: at 1, where torch.export fixes the dims
                _export(torch, module, examples(lambda d, axis: 1), names, dynamic_axes, out)
            except _ExportFailed:
                sizes = ", ".join(
                    f"{d}={n}"
                    for s, a in zip(specs, args, strict=True)
                    for d, n in zip(s.shape, a.shape, strict=True)
                    if isinstance(d, str)
                )
                raise InputModelError(
                    f"torch.onnx.export failed for {factory} (the example inputs' sizes: "
                    f"{sizes}, then all 1; give a dim the size the module takes with --set "
                    f"dims.NAME.opt=N): {exc}"
                ) from None
        return onnx.load(out, load_external_data=True)


class _ExportFailed(Exception):
    """Both of torch's exporters refused the module; the message says what each said."""


def _export(
    torch: Any,
    module: Any,
    args: tuple[Any, ...],
    names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    out: Path,
) -> None:
    """torch.onnx.export to `out`: the torch.export-based exporter first, the TorchScript one
    for what it cannot take."""
    # torch.export's own form: per positional input, axis -> the dim's name (which the ONNX
    # graph keeps); `dynamic_axes` is the TorchScript exporter's (converted with a
    # deprecation warning by the other)
    shapes = tuple(dynamic_axes.get(name) for name in names)
    exporters: tuple[dict[str, Any], ...] = (
        {
            "dynamo": True,
            "opset_version": 18,
            "dynamic_shapes": shapes if dynamic_axes else None,
            "verbose": False,
        },
        {"dynamo": False, "opset_version": 17, "dynamic_axes": dynamic_axes or None},
    )
    said = []
    for options in exporters:
        try:
            torch.onnx.export(module, args, str(out), input_names=names, **options)
            return
        except Exception as exc:  # each exporter refuses in its own way; the message is kept
            said.append(" ".join(str(exc).split()))
    raise _ExportFailed(f"{said[1][:400]} (torch.export-based exporter: {said[0][:200]})")


def normalize_model(
    model: onnx.ModelProto, where: str, min_opset: int = 13
) -> tuple[onnx.ModelProto, dict]:
    """Check, upgrade and shape-infer; returns the model and a record of what changed."""
    record: dict = {"named_dims": {}}
    merged = canonical_opset_imports(model, where)
    if merged:
        record["opset_imports"] = merged
    dropped = drop_initializer_inputs(model)
    if dropped:
        record["initializer_inputs_dropped"] = len(dropped)
    model, inlined, kept = inline_functions(model)
    if inlined:
        record["functions_inlined"] = inlined
    if kept:
        record["functions_kept"] = kept
    # onnx.checker requires producers before consumers; converters do not always write them
    # so (onnxruntime's and onnxconverter-common's convert_float_to_float16 with
    # keep_io_types append the input Casts last), and ONNX Runtime loads either order
    if sort_topologically(model.graph):
        record["nodes_sorted"] = True
    renamed = unique_node_names(model.graph)
    if renamed:
        record["nodes_renamed"] = renamed
    padded = explicit_same_pads(model)
    if padded:
        record["same_pads_made_explicit"] = padded
    filled = _fill_output_shapes(model)
    if filled:
        record["output_shapes_inferred"] = filled
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputModelError(f"{where}: fails onnx.checker: {first}") from exc
    except (ValueError, EncodeError):
        pass  # > 2 GB cannot be checked in memory; preflight checked the file and its data
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    record["opset_source"] = opset
    if opset < min_opset:
        try:
            model = onnx.version_converter.convert_version(model, min_opset)
        except Exception as exc:
            raise InputModelError(
                f"{where}: opset {opset} could not be upgraded to {min_opset} ({exc}); "
                f"re-export at opset >= {min_opset} or set normalize.min_opset"
            ) from exc
        record["opset_upgraded_to"] = min_opset
    record["named_dims"] = name_unnamed_dims(model)
    try:
        model = _infer_shapes(model)
    except Exception as exc:
        raise InputModelError(f"{where}: shape inference failed: {exc}") from exc
    return model, record


def unique_node_names(graph: onnx.GraphProto) -> int:
    """Give each node that shares its name with an earlier one (in any graph of the model) a
    name of its own, in place; how many. Node names mean nothing to the computation, but
    ONNX Runtime refuses a model with two of one name ("two nodes with same node name"), and
    the int8 searches and node_block_list name nodes; some converters name every node alike.
    Unnamed nodes stay unnamed."""
    taken: set[str] = set()
    repeats: list[onnx.NodeProto] = []
    for node in nodes(graph):
        if node.name and node.name in taken:
            repeats.append(node)
        taken.add(node.name)
    for node in repeats:
        base, k = node.name, 1
        while f"{base}_{k}" in taken:
            k += 1
        node.name = f"{base}_{k}"
        taken.add(node.name)
    return len(repeats)


def inline_functions(
    model: onnx.ModelProto,
) -> tuple[onnx.ModelProto, list[str], str]:
    """`model` with its model-local functions inlined (onnx.inliner), their `domain:name`s,
    and "" (or the model as it is, no names, and why not, where they cannot be inlined: the
    runtimes that take functions still build it); the opset imports of their domains go
    where no node is left in them. torch's `export_modules_as_functions` and some converters
    write a module as a function: ONNX Runtime runs it, but OpenVINO could not read it
    ("__main__:Block"), NNCF and TVM refused it, and ONNX Runtime's quantizer left the
    function's Convs in float (a CNN whose blocks were functions, 2026-12-05)."""
    if not model.functions:
        return model, [], ""
    names = [f"{f.domain}:{f.name}" for f in model.functions]
    listed = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    if too_big(model):
        return model, [], f"{listed} kept: the model is over 2 GB, more than the inliner reads"
    from onnx import inliner

    try:
        inlined = inliner.inline_local_functions(model)
    except Exception as exc:  # the C++ inliner raises RuntimeError and its own types
        return model, [], f"{listed} kept: the inliner failed ({' '.join(str(exc).split())[:200]})"
    used = {n.domain for n in nodes(inlined.graph)}
    gone = {f.domain for f in model.functions} - used
    kept = [o for o in inlined.opset_import if o.domain not in gone]
    del inlined.opset_import[:]
    inlined.opset_import.extend(kept)
    return inlined, names, ""


def explicit_same_pads(model: onnx.ModelProto) -> list[str]:
    """Dilated convolutions with auto_pad SAME_UPPER/SAME_LOWER and stride 1 given the same
    padding as explicit pads, in place (every graph); their names. TorchScript's exporter
    writes `nn.Conv1d(padding="same", dilation=2)` (a TCN's, a vocoder's) so, and ONNX
    Runtime refuses it at every size ("Dilation not supported for AutoPadType::SAME_UPPER").
    At stride 1 the padding does not depend on the input's size: (kernel - 1) x dilation in
    all, the odd one at the end for SAME_UPPER and at the start for SAME_LOWER, as ONNX
    defines them. Other strides, whose padding does, are left as they are."""
    done = []
    for graph in graphs(model.graph):
        weights = {t.name: list(t.dims) for t in graph.initializer}
        for node in graph.node:
            if node.op_type not in ("Conv", "ConvInteger"):
                continue
            attrs = {a.name: a for a in node.attribute}
            mode = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
            dilations = list(attrs["dilations"].ints) if "dilations" in attrs else []
            strides = list(attrs["strides"].ints) if "strides" in attrs else []
            if mode not in ("SAME_UPPER", "SAME_LOWER") or all(d == 1 for d in dilations):
                continue
            kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else []
            if not kernel and len(node.input) > 1 and node.input[1] in weights:
                kernel = weights[node.input[1]][2:]
            if not kernel or any(s != 1 for s in strides) or len(dilations) != len(kernel):
                continue
            total = [(k - 1) * d for k, d in zip(kernel, dilations, strict=True)]
            small = [t // 2 for t in total]
            big = [t - b for t, b in zip(total, small, strict=True)]
            begin, end = (small, big) if mode == "SAME_UPPER" else (big, small)
            kept = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
            del node.attribute[:]
            node.attribute.extend(kept)
            node.attribute.append(onnx.helper.make_attribute("pads", begin + end))
            done.append(node.name or node.output[0])
    return done


def drop_initializer_inputs(model: onnx.ModelProto) -> list[str]:
    """Take the main graph's inputs that name one of its initializers out of its inputs, in
    place (IR 4 on, an initializer need not be an input); their names. Exporters of the
    model-zoo era wrote every weight as an input too (IR 3 required it; torch's
    `keep_initializers_as_inputs` still does). The contract never lists them (interface.py:
    a weight is not an input), and from IR 4 ONNX Runtime treats such an initializer as a
    default a caller may override, so it folds and fuses nothing through it: the reference
    of a torch-exported opset 9 CNN (IR 4) ran 2.08x slower than its simplified ort-fp32
    artifact, whose graph onnxsim had rid of them (2026-12-05), and every speedup measured
    against that reference was too high."""
    weights = {i.name for i in model.graph.initializer}
    dropped = [i.name for i in model.graph.input if i.name in weights]
    if not dropped:
        return []
    kept = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.ir_version = max(model.ir_version, 4)
    return dropped


def _fill_output_shapes(model: onnx.ModelProto) -> list[str]:
    """Give graph outputs that declare no shape at all (not even a rank) the one ONNX shape
    inference finds, in place; their names. ONNX Runtime runs such a model, and onnx.checker
    refuses it ("Field 'shape' of 'type' is required")."""
    bare = [
        o.name
        for o in model.graph.output
        if o.type.HasField("tensor_type") and not o.type.tensor_type.HasField("shape")
    ]
    if not bare:
        return []
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - the checker then says what is wrong
        return []
    found = {o.name: o for o in inferred.graph.output if o.type.tensor_type.HasField("shape")}
    filled = []
    for o in model.graph.output:
        if o.name in bare and o.name in found:
            o.type.tensor_type.shape.CopyFrom(found[o.name].type.tensor_type.shape)
            filled.append(o.name)
    return filled


def canonical_opset_imports(model: onnx.ModelProto, where: str) -> str:
    """Each domain's opset declared once, the ONNX domain first (in place); what changed, ''
    when nothing did. Tools read these as exporters seldom write them otherwise: ONNX
    Runtime's quantizer refuses a model that declares the ONNX domain twice ("Failed to find
    proper ai.onnx domain"), and NNCF takes the first entry for the model's opset (an
    ai.onnx.ml opset 1 first: "opset version < 10 do not support quantization"); skl2onnx
    writes both. One domain at two versions has no one meaning: an error."""
    versions: dict[str, list[int]] = {}
    for o in model.opset_import:
        versions.setdefault(o.domain, []).append(o.version)
    clash = {d or "ai.onnx": sorted(set(v)) for d, v in versions.items() if len(set(v)) > 1}
    if clash:
        raise InputModelError(
            f"{where}: opset_import declares a domain at more than one version ({clash}); "
            "re-export the model with one opset per domain"
        )
    before = [(o.domain or "ai.onnx", o.version) for o in model.opset_import]
    order = sorted(versions, key=lambda d: d not in ("", "ai.onnx"))  # stable: the rest as given
    after = [(d or "ai.onnx", versions[d][0]) for d in order]
    if after == before:
        return ""
    del model.opset_import[:]
    for domain in order:
        model.opset_import.add(domain=domain, version=versions[domain][0])
    return f"{before} -> {after}"


def too_big(model: onnx.ModelProto) -> bool:
    """A model protobuf cannot hold in one message (2 GB): it travels with external data."""
    try:
        return model.ByteSize() > _TWO_GB
    except EncodeError:
        return True


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    if not too_big(model):
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    with tempfile.TemporaryDirectory(prefix="compile-pkg-shapes-") as tmp:
        path = save_model(model, Path(tmp))  # weights go to external data
        onnx.shape_inference.infer_shapes_path(str(path), str(path), strict_mode=False)
        return onnx.load(path, load_external_data=True)


def save_model(model: onnx.ModelProto, out_dir: Path) -> Path:
    """Save deterministically; external data (one file) only when the model exceeds 2 GB."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MODEL_FILE
    if too_big(model):
        onnx.save_model(
            model,
            path,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=DATA_FILE,
            size_threshold=1024,
        )
    else:
        path.write_bytes(model.SerializeToString(deterministic=True))
    return path
