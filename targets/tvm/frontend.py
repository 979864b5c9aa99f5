"""ONNX into Relax: shapes (dynamic within their ranges, or fixed at opt), the fp16 conversion
and the fixes TVM 0.27's importer needs. Shared by the build (targets/tvm/_worker.py) and
tuning (targets/tvm/tuning.py), which must tune the module the build compiles.
"""

from __future__ import annotations

import re
from typing import Any

from compiler.core.errors import BuildError, NotApplicable
from compiler.core.graphs import elem_types, nodes
from compiler.core.names import free_name

__all__ = ["fp32_accumulation", "has_fp16_compute", "import_onnx", "tvm_message"]


def tvm_message(exc: BaseException, limit: int = 600) -> str:
    """A TVM error in one line: its last three lines, where TVM says what failed."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    # TVM errors end with the useful line; keep the tail.
    msg = " | ".join(lines[-3:]) if lines else type(exc).__name__
    return msg if len(msg) <= limit else "..." + msg[-limit:]


def _shape_dict(req: dict[str, Any], dynamic: bool) -> tuple[dict[str, list[Any]], dict[str, int]]:
    import tvm

    dims = req["dims"]
    symbols: dict[str, Any] = {}
    names: set[str] = set()  # the shape variables' names, unique in the C source
    upper: dict[str, int] = {}
    shapes: dict[str, list[Any]] = {}
    for spec in req["inputs"]:
        shape: list[Any] = []
        for d in spec["shape"]:
            if isinstance(d, int):
                shape.append(d)
            elif dynamic:
                if d not in symbols:
                    names.add(name := _c_name(d, names))
                    symbols[d] = tvm.tirx.Var(name, "int64")
                shape.append(symbols[d])
                upper[d] = dims[d]["max"]
            else:
                shape.append(dims[d]["opt"])
        shapes[spec["name"]] = shape
    return shapes, upper


def _clip_to_min_max(mod: Any) -> Any:
    """Rewrite R.clip(x, lo, hi) into maximum/minimum with constants.

    ToMixedPrecision in TVM 0.27 fails on ops with scalar (PrimValue) arguments, and the
    ONNX frontend imports Clip/Relu6/HardSigmoid that way.
    """
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    clip = tvm.ir.Op.get("relax.clip")

    @mutator
    class _Rewrite(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if not isinstance(call, relax.Call) or call.op != clip:
                return call
            x, lo, hi = call.args
            dtype = x.ty.dtype
            lo_c = relax.const(float(getattr(lo.value, "value", lo.value)), dtype)
            hi_c = relax.const(float(getattr(hi.value, "value", hi.value)), dtype)
            return self.builder_.normalize(relax.op.minimum(relax.op.maximum(x, lo_c), hi_c))

    rewrite = _Rewrite(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewrite.builder_.update_func(gv, rewrite.visit_expr(func))
    return rewrite.builder_.get()


def fp32_accumulation(mod: Any) -> Any:
    """Every convolution and matrix product that reads and writes fp16 sums in float32 and
    casts its result to fp16 (TVM fuses the cast into the kernel).

    An fp16 op in Relax accumulates in fp16 unless its `out_dtype` says otherwise, and TVM's
    CPU code then rounds each partial sum to 11 bits. ppocr_det (DBNet) in fp16 on TVM's
    llvm build read its probability map at relative L2 error 0.14-0.18 of the fp32
    reference (636-934 pixels off by more than 0.5, on 4 pages at 480x640); with float32
    sums, 0.036-0.050 (0-19 pixels), as ONNX Runtime on the same fp16 graph (0.042-0.055),
    which computes its fp16 convolutions in float32 (2026-12-04). Ops already reading or
    writing another dtype are left as they are."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class _Widen(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            attrs = getattr(call, "attrs", None)
            if (
                not isinstance(call, relax.Call)
                or not isinstance(call.op, tvm.ir.Op)
                or attrs is None
                or not hasattr(attrs, "out_dtype")
                or _dtype(call) != "float16"
                or any(_dtype(a) != "float16" for a in call.args[:2])
            ):
                return call
            info = type(attrs).__tvm_ffi_type_info__
            fields = {f.name: getattr(attrs, f.name) for f in info.fields}
            wide = relax.Call(
                call.op,
                call.args,
                tvm.ir.make_node(info.type_key, **{**fields, "out_dtype": "float32"}),
                call.ty_args,
            )
            return self.builder_.normalize(
                relax.op.astype(self.builder_.normalize(wide), "float16")
            )

    widen = _Widen(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            widen.builder_.update_func(gv, widen.visit_expr(func))
    return widen.builder_.get()


def _dtype(expr: Any) -> str:
    return str(getattr(getattr(expr, "ty", None), "dtype", ""))


def _to_fp16(mod: Any) -> Any:
    from tvm import relax

    try:
        # convolutions and matrix products sum in float32, as fp32_accumulation makes them
        return relax.transform.ToMixedPrecision(out_dtype="float32")(_clip_to_min_max(mod))
    except Exception as exc:
        raise BuildError(
            f"tvm fp16 conversion (Relax ToMixedPrecision) failed: {tvm_message(exc, 300)}; "
            "put the fp16 pass in this variant (passes: [{name: fp16}]) so TVM imports an "
            "fp16 ONNX model instead"
        ) from exc


def has_fp16_compute(model: Any) -> bool:
    """True when the ONNX model already computes in fp16 (e.g. the fp16 pass's output)."""
    import onnx

    fp16 = onnx.TensorProto.FLOAT16
    if any(t.data_type == fp16 for t in model.graph.initializer):
        return True
    for node in model.graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == fp16:
                return True
            if node.op_type == "Constant" and attr.t.data_type == fp16:
                return True
    return False


def _fold_static(model: Any, shapes: dict[str, list[Any]]) -> Any:
    """Fold shape arithmetic (Shape -> Slice -> Concat -> Reshape) at fixed input shapes.

    Exporters such as tf2onnx compute Reshape targets from Shape; with a symbolic batch
    TVM's importer cannot use them. onnxsim (the `passes` extra) folds them once the shapes
    are fixed; without it, or when it fails, the model is imported as it is.
    """
    try:
        import onnxsim
    except ImportError:
        return model
    try:
        folded, ok = onnxsim.simplify(model, overwrite_input_shapes=shapes)
    except Exception:
        return model
    return folded if ok else model


# TVM writes input and shape-variable names into the kernels' C source as they are
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _c_name(name: str, taken: set[str]) -> str:
    """`name` where it is a C identifier, else one made from it that `taken` lacks."""
    if _IDENTIFIER.match(name):
        return name
    base = "v_" + re.sub(r"\W", "_", name)
    made, k = base, 1
    while made in taken:
        made, k = f"{base}_{k}", k + 1
    return made


def _c_inputs(
    model: Any, shapes: dict[str, list[Any]], dtypes: dict[str, str]
) -> tuple[Any, dict[str, list[Any]], dict[str, str]]:
    """The model with each input whose name is not a C identifier (tf2onnx's
    'serving_default/input_1:0') fed through an Identity from one that is: TVM puts input
    names into the CUDA and C source it compiles, where '/' does not compile. The inputs keep
    their order, which is how the artifact's runtime passes them."""
    import onnx
    from onnx import helper

    bad = [i.name for i in model.graph.input if not _IDENTIFIER.match(i.name)]
    if not bad:
        return model, shapes, dtypes
    renamed = onnx.ModelProto()
    renamed.CopyFrom(model)
    taken = {i.name for i in model.graph.input} | {v for n in model.graph.node for v in n.output}
    shapes, dtypes = dict(shapes), dict(dtypes)
    for inp in renamed.graph.input:
        if inp.name not in bad:
            continue
        old, inp.name = inp.name, _c_name(inp.name, taken)
        taken.add(inp.name)
        renamed.graph.node.insert(0, helper.make_node("Identity", [inp.name], [old]))
        shapes[inp.name], dtypes[inp.name] = shapes.pop(old), dtypes.pop(old)
    return renamed, shapes, dtypes


def _empty_resize_inputs_absent(model: Any) -> Any:
    """The model with Resize's roi and scales given as empty constants (tf2onnx writes them
    so beside sizes, and opset 10-12 models converted up carry them) left out instead, which
    ONNX defines as the same. TVM's frontend (0.27) takes an empty scales for given and
    refuses the node ("Only one of scales and sizes can be provided in Resize"); without
    them it computes what ONNX Runtime does (0 to 4e-7 on linear, nearest and
    tf_half_pixel_for_nn resizes, 2026-12-05)."""
    import onnx

    empty = {t.name for t in model.graph.initializer if 0 in t.dims}
    empty |= {
        n.output[0]
        for n in model.graph.node
        if n.op_type == "Constant" and any(a.name == "value" and 0 in a.t.dims for a in n.attribute)
    }
    resizes = [
        n
        for n in model.graph.node
        if n.op_type == "Resize" and any(i in empty for i in n.input[1:3])
    ]
    if not resizes:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        if node.op_type == "Resize":
            for i in (1, 2):
                if len(node.input) > i and node.input[i] in empty:
                    node.input[i] = ""
    return out


# ops TVM's ONNX frontend (0.27) lets read a shape (its `shape_compatible_ops`): it refuses
# every other op a shape reaches ("cannot handle ShapeExpr inputs"); the first group returns a
# shape again where a shape is its data (the inputs named; None: all of them), not where one
# only indexes it (a Slice of a constant by a length, GPT-2's causal mask: its output, and
# the Where over the attention scores that reads it, are tensors), the others a tensor
_SHAPE_KEEPING: dict[str, tuple[int, ...] | None] = {
    "Concat": None,
    "Where": (1, 2),
    "Slice": (0,),
    "Squeeze": (0,),
}
_SHAPE_READING = set(_SHAPE_KEEPING) | {
    "Reshape", "Resize", "ConstantOfShape", "Gather", "Shape", "Expand", "Equal", "Cast",
    "CastLike",
}  # fmt: skip


def _data(node: Any) -> set[str]:
    """The inputs of a _SHAPE_KEEPING `node` whose values its output carries."""
    which = _SHAPE_KEEPING[node.op_type]
    return {v for i, v in enumerate(node.input) if which is None or i in which}


def _read_values(graph: Any) -> set[str]:
    """The values some node (a subgraph's too: they read outer values by name) or a graph
    output reads."""
    return {o.name for o in graph.output} | {i for n in nodes(graph) for i in n.input}


def _tvm_forms(model: Any) -> Any:
    """The model in forms TVM's frontend (0.27) imports, each computing what the original
    does on ONNX Runtime (the rewrite is for the TVM import only; the reference keeps the
    model as it came):

    - a Pow of a float base to an integer exponent (`x ** 2` as some exporters write it):
      the exponent cast to the base's type first. TVM refused the node ("Binary operators
      must have the same datatype for both operands").
    - a MaxPool whose Indices output nothing reads: that output left out. TVM computes no
      indices and refused every MaxPool that names them ("Missing outputs during
      conversion. Expected 2 but Got 1"), read or not.
    - a shape (a Shape's output, kept through Concat, Where, Slice, Squeeze as their data,
      not as a Slice's bounds or a Where's condition) that reaches an
      op TVM takes no shape in (`Add`, `Mul`, `Identity`...) or a graph output: cast to
      int64 on the way, which makes it a tensor. A symbolic model failed its dynamic import
      ("cannot handle ShapeExpr inputs": built static only) and one that returns a shape
      failed its build.
    - a OneHot (tf2onnx's token-type embeddings: a one-hot MatMul): its output cast to its
      values' type. TVM's is float64 whatever the values, and every float32 op reading it
      refused the model ("Binary operators must have the same datatype")."""
    import onnx
    from onnx import helper

    graph = model.graph
    read = _read_values(graph)
    pools = [
        k
        for k, n in enumerate(graph.node)
        if n.op_type == "MaxPool" and len(n.output) > 1 and n.output[1] and n.output[1] not in read
    ]
    casts: list[tuple[int, int, int]] = []  # (node, its input, the type that input is cast to)
    pows = [k for k, n in enumerate(graph.node) if n.op_type == "Pow" and len(n.input) == 2]
    hots = [k for k, n in enumerate(graph.node) if n.op_type == "OneHot" and len(n.input) == 3]
    types = elem_types(model) if pows or hots else {}
    # (node, the type its output is cast to): TVM's OneHot returns float64 whatever its values
    hot_casts = [
        (k, types[graph.node[k].input[2]])
        for k in hots
        if types.get(graph.node[k].input[2]) not in (None, onnx.TensorProto.DOUBLE)
    ]
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    floats.add(onnx.TensorProto.BFLOAT16)
    for k in pows:
        base, exponent = (types.get(name) for name in graph.node[k].input)
        if base in floats and exponent not in (None, *floats):
            casts.append((k, 1, int(base)))  # type: ignore[arg-type]
    shapes: set[str] = set()
    for k, n in enumerate(graph.node):
        if n.op_type not in _SHAPE_READING:
            casts.extend(
                (k, i, onnx.TensorProto.INT64) for i, v in enumerate(n.input) if v in shapes
            )
        if n.op_type == "Shape" or (n.op_type in _SHAPE_KEEPING and shapes & _data(n)):
            shapes.update(n.output[:1])
    returned = [o.name for o in graph.output if o.name in shapes]
    if not pools and not casts and not returned and not hot_casts:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    edited = out.graph.node
    taken = read | {v for n in edited for v in n.output}  # the copy reads what the model does
    taken |= {t.name for t in out.graph.initializer}

    for k in pools:
        del edited[k].output[1:]
    for name in returned:  # made under another name, which its readers read, and cast
        shape = free_name(f"{name}_shape", taken)
        for node in edited:
            node.input[:] = [shape if v == name else v for v in node.input]
            node.output[:] = [shape if v == name else v for v in node.output]
        edited.append(helper.make_node("Cast", [shape], [name], to=onnx.TensorProto.INT64))
    # (where, 0 for a cast after a node and 1 before one, the Cast): inserted from the last,
    # so the indices before stay right, and a cast after node k comes before one that node
    # k + 1 reads
    inserts: list[tuple[int, int, onnx.NodeProto]] = []
    for k, to in hot_casts:
        node = edited[k]
        name, node.output[0] = node.output[0], free_name(f"{node.output[0]}_float64", taken)
        inserts.append((k + 1, 0, helper.make_node("Cast", [node.output[0]], [name], to=to)))
    for k, i, to in casts:
        node = edited[k]
        cast = free_name(f"{node.input[i]}_as_{onnx.TensorProto.DataType.Name(to).lower()}", taken)
        inserts.append((k, 1, helper.make_node("Cast", [node.input[i]], [cast], to=to)))
        node.input[i] = cast
    for k, _, cast_node in sorted(inserts, key=lambda e: (e[0], e[1]), reverse=True):
        edited.insert(k, cast_node)
    return out


def _unimplemented(exc: BaseException) -> bool:
    """Whether the ONNX frontend refused what it does not implement: its OpNotImplemented and
    OpAttributeUnImplemented, a NotImplementedError, or one of its asserts on a form it does
    not take ("SkipLayerNormalization import currently only supports required beta and
    bias"), rather than failing on a model it should take."""
    import tvm

    unimplemented = (
        NotImplementedError,
        AssertionError,
        tvm.error.OpNotImplemented,
        tvm.error.OpAttributeUnImplemented,
    )
    return isinstance(exc, unimplemented)


def import_onnx(model: Any, req: dict[str, Any], dynamic: bool) -> Any:
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    shapes, upper = _shape_dict(req, dynamic)
    symbolic = any(isinstance(d, str) for s in req["inputs"] for d in s["shape"])
    if not dynamic and symbolic:
        model = _fold_static(model, shapes)
    dtypes = {s["name"]: s["dtype"] for s in req["inputs"]}
    model, shapes, dtypes = _c_inputs(model, shapes, dtypes)
    model = _tvm_forms(_empty_resize_inputs_absent(model))
    try:
        mod = from_onnx(model, shape_dict=shapes, dtype_dict=dtypes, keep_params_in_input=False)
    except Exception as exc:
        if _unimplemented(exc):
            # not applicable, not failed: the frontend says it does not take this model
            raise NotApplicable(
                f"TVM's ONNX frontend cannot import the model: {tvm_message(exc)}; use the "
                "onnxruntime or openvino artifact for this model"
            ) from exc
        raise BuildError(f"tvm ONNX import failed: {tvm_message(exc)}") from exc
    if upper:
        mod["main"] = mod["main"].with_attr("tir_var_upper_bound", upper)
    mod = relax.transform.DecomposeOpsForInference()(mod)
    if req["precision"] == "fp16":
        if not has_fp16_compute(model):
            mod = _to_fp16(mod)
        mod = fp32_accumulation(mod)
    elif req["precision"] == "int8":
        # not applicable, not failed: an already-quantized source's variants are int8
        raise NotApplicable(
            "the model is already quantized (int8); tvm builds fp32 and fp16 artifacts: the "
            "onnxruntime and openvino artifacts run its int8"
        )
    elif req["precision"] != "fp32":
        raise BuildError(
            f"tvm builds fp32 and fp16 artifacts, not {req['precision']}; "
            "use onnxruntime or openvino for int8"
        )
    return mod
