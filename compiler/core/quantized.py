"""Which ONNX ops compute in integers. A model holding any of them is already quantized, in
QDQ form (QuantizeLinear/DequantizeLinear around float ops), in operator form (ConvInteger
and MatMulInteger after DynamicQuantizeLinear, QLinear*, com.microsoft's fused int8 ops) or
weight-only (com.microsoft's 4-bit MatMulNBits, MatMulBnb4 and GatherBlockQuantized, which
ONNX Runtime's MatMulNBitsQuantizer and model builders write: float activations, blocks of
int4 weights with their scales).
Passes read it to leave such a model's int8 alone; backends, to know an artifact is int8.
Standard library only."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["QDQ_OPS", "QUANTIZED_OPS", "is_quantized_op", "quantized_ops"]

# the pair around float ops in QDQ form
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
QUANTIZED_OPS = QDQ_OPS | frozenset(
    {
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "QGemm",
        "QAttention",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "DynamicQuantizeLSTM",
        # weight-only
        "MatMulNBits",
        "MatMulBnb4",
        "MatMulFpQ4",
        "GatherBlockQuantized",
    }
)


def is_quantized_op(op_type: str) -> bool:
    """Whether `op_type` computes in integers (any op named QLinear* counts too)."""
    return op_type in QUANTIZED_OPS or op_type.startswith("QLinear")


def quantized_ops(histogram: Mapping[str, int]) -> dict[str, int]:
    """The integer-computing ops of an op histogram (op type -> count), with their counts."""
    return {op: n for op, n in histogram.items() if is_quantized_op(op)}
