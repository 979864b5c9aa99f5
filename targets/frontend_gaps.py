"""What the ONNX frontends of OpenVINO and TVM compute otherwise than ONNX defines it, with no
error, found before a build converts the model: the backend refuses the model (not
applicable) rather than build an artifact that fails parity, or, with no GPU to verify it
on, one nobody finds wrong until it is served.

**Resize's antialias (opset 18).** OpenVINO's ONNX frontend (2026.4) reads Resize as opset 11
defined it, and TVM's Relax frontend (0.27) does not read the attribute either: a bicubic
64 -> 32 downsample exported from `F.interpolate(..., antialias=True)` came out 1.27 (max
abs) from ONNX Runtime's output through OpenVINO and 0.83 through TVM (llvm), where ONNX
Runtime and PyTorch agree to 2e-7 (2026-12-05).

**A Resize by scales that do not land on whole sizes (TVM).** ONNX maps an output pixel back
through the scale it is given; TVM's Relax frontend (0.27) through output size / input size,
which is the same only where input size x scale is a whole number. A linear 0.55 x 0.8
downsample of 8 x 8 came out 1.39 from ONNX Runtime's (1.3 nearest: 3.2); 0.5, 0.75, 1.5, 2
and 2.5 of 8 agree to 1e-7, and align_corners, which is defined by the sizes, agrees always.
With a dynamic dim only a whole-number scale is safe (0.5 of an odd size is not).

**A cubic Resize with exclude_outside (OpenVINO).** tf2onnx writes TensorFlow's bicubic
resize so (cubic_coeff_a -0.5, exclude_outside 1). OpenVINO (2026.4) keeps the weights of the
taps outside the input, as exclude_outside 0 does: a 2x upsample came out 0.11-0.20 from ONNX
Runtime's, which agrees with ONNX's reference implementation to 4e-7.

**Smaller ones, from the same sweep (ONNX's reference implementation agreeing with ONNX
Runtime in each):** OpenVINO leaves out an LSTM's peephole weights (input P: 0.083 off) and
numbers a MaxPool's indices row-major where storage_order 1 asks for column-major; TVM
computes RoiAlign's half_pixel (opset 16's default) as output_half_pixel (0.57 off) and
ignores ConvTranspose's output_shape (its output had another shape).

**Resize's keep_aspect_ratio_policy (opset 18; OpenVINO, TVM) and IsInf's one-sided
detection (TVM).** Given sizes with not_larger or not_smaller, ONNX scales every axis by one
factor that keeps the result within (or around) the sizes; both frontends resize to the sizes
as given (4 x 6 to 8 x 8 where ONNX Runtime and the reference make 5 x 8). TVM reads IsInf as
detecting both infinities whatever detect_positive and detect_negative say.

**sequence_lens of LSTM, GRU and RNN where the input has a dynamic dim (OpenVINO).** A speech
or text encoder fed padded batches says each sequence's length in sequence_lens; ONNX stops
each sequence there (Y zero past it, Y_h its last valid step). OpenVINO (2026.4) does so
where X's shape is static, and where any of its dims is dynamic (time, batch or features)
runs every sequence to X's end: Y_h 0.16-1.9 off from ONNX Runtime's (lengths 2, 4, 5 of 5,
forward and bidirectional, all three ops), the same at full lengths. ONNX's reference
implementation ignores sequence_lens itself; ONNX Runtime's output equals running each
sequence cut to its length (2026-12-05).

**LSTM's input_forget, and a reverse direction's own activations (OpenVINO).** OpenVINO
(2026.4) ignores input_forget (0.24 off on a 5-step LSTM) and runs a bidirectional LSTM, GRU
or RNN given other activations for its reverse direction (Relu forward, Tanh reverse) with
the forward ones on both (1.2 off), with no error (2026-12-06).

**Resize's half_pixel_symmetric (opset 19; TVM).** TVM's Relax frontend (0.27) stops the
import ("Unsupported coordinate_transformation_mode"): refused up front, as not applicable,
instead of recorded as a failed build (2026-12-06).

**A strided MaxPool with auto_pad SAME_LOWER (TVM).** TVM (0.27) gives it another output
size than ONNX asks (ceil(input / stride)): 3 rows of a 7-row input at stride 2 where ONNX
Runtime gives 4 (2026-12-06). Convolutions and AveragePools with SAME_LOWER agree.

`openvino_gaps` and `tvm_gaps` give each backend's reasons for a model, in one list.
"""

from __future__ import annotations

import numpy as np
import onnx

from compiler.core.graphs import constant, graphs, shapes

__all__ = [
    "antialiased_downsamples",
    "aspect_kept_resizes",
    "coupled_gate_lstms",
    "dynamic_sequence_lens",
    "excluding_cubic_resizes",
    "off_grid_scale_resizes",
    "one_sided_isinfs",
    "strided_same_lower_max_pools",
    "openvino_gaps",
    "tvm_gaps",
    "two_way_activations",
]


def _known_shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """The tensors of known rank (`shapes`), each dim's size where ONNX shape inference
    knows it as a number (None where not)."""
    return {
        name: tuple(d if isinstance(d, int) and d > 0 else None for d in dims)
        for name, dims in shapes(model).items()
    }


def antialiased_downsamples(model: onnx.ModelProto) -> list[str]:
    """The Resize nodes (names, or first outputs; main graph and subgraphs) whose antialias
    a frontend that ignores it would drop: linear or cubic ones that may shrink an axis. A
    resize that only enlarges (constant scales of at least 1, or known shapes that do not
    shrink) is the same with or without it."""
    found = [
        n
        for n in (node for g in graphs(model.graph) for node in g.node)
        if n.op_type == "Resize"
        and any(a.name == "antialias" and a.i for a in n.attribute)
        and not any(a.name == "mode" and a.s == b"nearest" for a in n.attribute)
    ]
    if not found:
        return []
    known = _known_shapes(model)
    shrinking = []
    for n in found:
        scales = constant(model.graph, n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if scales is not None and scales.size and bool((scales >= 1).all()):
            continue
        before, after = known.get(n.input[0]), known.get(n.output[0])
        if before and after and len(before) == len(after):
            pairs = zip(before, after, strict=True)
            if all(a is not None and b is not None and b >= a for a, b in pairs):
                continue
        shrinking.append(n.name or n.output[0])
    return shrinking


def excluding_cubic_resizes(model: onnx.ModelProto) -> list[str]:
    """The cubic Resize nodes with exclude_outside 1 (names, or first outputs; main graph
    and subgraphs), which OpenVINO computes as if it were 0."""
    return [
        n.name or n.output[0]
        for g in graphs(model.graph)
        for n in g.node
        if n.op_type == "Resize"
        and any(a.name == "mode" and a.s == b"cubic" for a in n.attribute)
        and any(a.name == "exclude_outside" and a.i for a in n.attribute)
    ]


def off_grid_scale_resizes(model: onnx.ModelProto) -> list[str]:
    """The main graph's Resize nodes (names, or first outputs) with constant scales that may
    not land on whole sizes: on an axis a scale other than 1 where the input's size times it
    is not a whole number, or, for a size not known, where the scale is not one. Scales read
    against align_corners' grid, which is the sizes', are the same either way."""
    known: dict[str, tuple[int | None, ...]] | None = None
    found = []
    for n in model.graph.node:
        if n.op_type != "Resize" or len(n.input) < 3 or not n.input[2]:
            continue
        if any(
            a.name == "coordinate_transformation_mode" and a.s == b"align_corners"
            for a in n.attribute
        ):
            continue
        scales = constant(model.graph, n.input[2])
        if scales is None or not scales.size:
            continue
        if known is None:
            known = _known_shapes(model)
        dims = known.get(n.input[0])
        for axis, scale in enumerate(scales.astype(np.float64).ravel()):
            if scale == 1:
                continue
            size = dims[axis] if dims is not None and axis < len(dims) else None
            if not float(scale * size if size is not None else scale).is_integer():
                found.append(n.name or n.output[0])
                break
    return found


def _named(nodes: list[onnx.NodeProto]) -> list[str]:
    return [n.name or n.output[0] for n in nodes]


def _all_nodes(model: onnx.ModelProto, op: str) -> list[onnx.NodeProto]:
    return [n for g in graphs(model.graph) for n in g.node if n.op_type == op]


def _attr(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    return next((a for a in node.attribute if a.name == name), None)


def peephole_lstms(model: onnx.ModelProto) -> list[str]:
    """LSTM nodes given peephole weights (input P) that are not all zero."""
    found = []
    for n in _all_nodes(model, "LSTM"):
        if len(n.input) > 7 and n.input[7]:
            p = constant(model.graph, n.input[7])
            if p is None or bool(np.any(p)):
                found.append(n)
    return _named(found)


def coupled_gate_lstms(model: onnx.ModelProto) -> list[str]:
    """LSTM nodes with input_forget 1 (the input and forget gates coupled)."""
    found = [n for n in _all_nodes(model, "LSTM") if (a := _attr(n, "input_forget")) and a.i]
    return _named(found)


_ACTIVATIONS_PER_DIRECTION = {"LSTM": 3, "GRU": 2, "RNN": 1}


def two_way_activations(model: onnx.ModelProto) -> list[str]:
    """Bidirectional LSTM, GRU and RNN nodes whose reverse direction is given other
    activations (or activation alphas and betas) than the forward one."""
    found = []
    for op, per in _ACTIVATIONS_PER_DIRECTION.items():
        for n in _all_nodes(model, op):
            direction = _attr(n, "direction")
            if direction is None or direction.s != b"bidirectional":
                continue
            for name in ("activations", "activation_alpha", "activation_beta"):
                a = _attr(n, name)
                values = list(a.strings or a.floats) if a else []
                if len(values) == 2 * per and values[:per] != values[per:]:
                    found.append(n)
                    break
    return _named(found)


def dynamic_sequence_lens(model: onnx.ModelProto) -> list[str]:
    """LSTM, GRU and RNN nodes given sequence_lens whose input X is not known to be of one
    static shape (any dynamic dim, or a node in a subgraph, whose shapes are not read)."""
    known = _known_shapes(model)
    found = []
    for op in ("LSTM", "GRU", "RNN"):
        for n in _all_nodes(model, op):
            if len(n.input) > 4 and n.input[4]:
                x = known.get(n.input[0])
                if x is None or any(d is None for d in x):
                    found.append(n)
    return _named(found)


def aspect_kept_resizes(model: onnx.ModelProto) -> list[str]:
    """Resize nodes given sizes with a keep_aspect_ratio_policy other than stretch (opset
    18): the sizes are then a bound, and the output's shape is the input's scaled by one
    factor."""
    return _named(
        [
            n
            for n in _all_nodes(model, "Resize")
            if len(n.input) > 3
            and n.input[3]
            and (a := _attr(n, "keep_aspect_ratio_policy")) is not None
            and a.s != b"stretch"
        ]
    )


def one_sided_isinfs(model: onnx.ModelProto) -> list[str]:
    """IsInf nodes that detect only one of +inf and -inf."""
    return _named(
        [
            n
            for n in _all_nodes(model, "IsInf")
            if any(
                a.name in ("detect_positive", "detect_negative") and a.i == 0 for a in n.attribute
            )
        ]
    )


def column_major_pool_indices(model: onnx.ModelProto) -> list[str]:
    """MaxPool nodes whose indices output is read, numbered column-major (storage_order 1)."""
    return _named(
        [
            n
            for n in _all_nodes(model, "MaxPool")
            if len(n.output) > 1 and n.output[1] and (a := _attr(n, "storage_order")) and a.i == 1
        ]
    )


def half_pixel_roi_aligns(model: onnx.ModelProto) -> list[str]:
    """RoiAlign nodes of opset 16 or later in half_pixel mode (its default there)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 16:
        return []
    return _named(
        [
            n
            for n in _all_nodes(model, "RoiAlign")
            if (a := _attr(n, "coordinate_transformation_mode")) is None or a.s == b"half_pixel"
        ]
    )


def shaped_conv_transposes(model: onnx.ModelProto) -> list[str]:
    """ConvTranspose nodes that state their output_shape."""
    return _named([n for n in _all_nodes(model, "ConvTranspose") if _attr(n, "output_shape")])


def symmetric_half_pixel_resizes(model: onnx.ModelProto) -> list[str]:
    """Resize nodes whose coordinate_transformation_mode is half_pixel_symmetric (opset 19)."""
    return _named(
        [
            n
            for n in _all_nodes(model, "Resize")
            if (a := _attr(n, "coordinate_transformation_mode")) and a.s == b"half_pixel_symmetric"
        ]
    )


def strided_same_lower_max_pools(model: onnx.ModelProto) -> list[str]:
    """MaxPool nodes with auto_pad SAME_LOWER and a stride over 1 on some axis."""
    found = []
    for n in _all_nodes(model, "MaxPool"):
        auto, strides = _attr(n, "auto_pad"), _attr(n, "strides")
        if auto is not None and auto.s == b"SAME_LOWER" and strides and max(strides.ints) > 1:
            found.append(n)
    return _named(found)


def openvino_gaps(model: onnx.ModelProto) -> list[str]:
    """Why OpenVINO would compute `model` otherwise than ONNX defines it (module docstring);
    [] where nothing found says so."""
    checks = (
        (antialiased_downsamples, "ignores Resize's antialias (opset 18), and {} downsample with it"),
        (excluding_cubic_resizes, "keeps the outside taps of cubic Resize {} (exclude_outside 1)"),
        (aspect_kept_resizes, "ignores the keep_aspect_ratio_policy of Resize {}, and resizes to the sizes given"),
        (peephole_lstms, "leaves out the peephole weights of LSTM {}"),
        (coupled_gate_lstms, "ignores input_forget of LSTM {} (its input and forget gates coupled)"),
        (two_way_activations, "applies the forward direction's activations to both directions of {}"),
        (dynamic_sequence_lens, "ignores the sequence_lens of recurrent node(s) {} when their input has a dynamic dim (each sequence runs to the input's end)"),
        (column_major_pool_indices, "numbers the indices of MaxPool {} row-major, not column-major"),
    )  # fmt: skip
    return [text.format(found[:5]) for check, text in checks if (found := check(model))]


def tvm_gaps(model: onnx.ModelProto) -> list[str]:
    """Why TVM would compute `model` otherwise than ONNX defines it (module docstring); []
    where nothing found says so."""
    checks = (
        (antialiased_downsamples, "ignores Resize's antialias (opset 18), and {} downsample with it"),
        (off_grid_scale_resizes, "maps Resize {} through output size / input size, not the scales given, which differ where they do not land on whole sizes"),
        (half_pixel_roi_aligns, "computes RoiAlign {} as output_half_pixel, not half_pixel"),
        (shaped_conv_transposes, "ignores the output_shape of ConvTranspose {}"),
        (aspect_kept_resizes, "ignores the keep_aspect_ratio_policy of Resize {}, and resizes to the sizes given"),
        (one_sided_isinfs, "ignores detect_positive/detect_negative of IsInf {}, and detects both infinities"),
        (strided_same_lower_max_pools, "pads MaxPool {} (auto_pad SAME_LOWER, strided) to another output size"),
        (symmetric_half_pixel_resizes, "does not implement Resize {}'s coordinate_transformation_mode half_pixel_symmetric (it stops the import)"),
    )  # fmt: skip
    return [text.format(found[:5]) for check, text in checks if (found := check(model))]
