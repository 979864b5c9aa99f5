"""Engine I/O types numpy has no dtype for: bf16 and fp8 (E4M3), as raw bits.

TensorRT names an engine tensor's type with `trt.DataType` (`engine.get_tensor_dtype`); numpy
has no bfloat16 or float8, so `trt.nptype` raises for them and Polygraphy's TrtRunner cannot
view such an output as a numpy array. The runtime feeds those inputs as their bits (uint16 for
bf16, uint8 for fp8) and reads those outputs as raw bytes (`TrtRunner.infer(...,
return_raw_buffers=True)`), decoding them here to float32, exactly: every bf16 and every
E4M3 value is a float32. A contract that says `bfloat16` gets it back from the runner's cast.

Numpy only: the serving host's runtime imports this.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BITS_TYPES",
    "NUMPY_TYPES",
    "bf16_bits_to_float32",
    "decode_output",
    "encode_input",
    "float32_to_bf16_bits",
    "float32_to_fp8_bits",
    "fp8_bits_to_float32",
]

# trt.DataType member name -> numpy dtype, for the types numpy has
NUMPY_TYPES: dict[str, np.dtype] = {
    "FLOAT": np.dtype(np.float32),
    "HALF": np.dtype(np.float16),
    "INT8": np.dtype(np.int8),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
}
# trt.DataType member name -> the unsigned integer dtype that holds its bits
BITS_TYPES: dict[str, np.dtype] = {"BF16": np.dtype(np.uint16), "FP8": np.dtype(np.uint8)}

_FP8_MAX = 448.0  # E4M3FN: no infinities, S.1111.111 is NaN


def _fp8_table() -> np.ndarray:
    """float32 value of each of the 256 E4M3FN bit patterns."""
    bits = np.arange(256, dtype=np.uint32)
    sign = np.where(bits & 0x80, -1.0, 1.0)
    exp, man = (bits >> 3) & 0xF, (bits & 0x7).astype(np.float64)
    value = np.where(exp == 0, man / 8 * 2.0**-6, (1 + man / 8) * 2.0 ** (exp.astype(np.int64) - 7))
    value = np.where((bits & 0x7F) == 0x7F, np.nan, value)
    return (sign * value).astype(np.float32)


_FP8 = _fp8_table()
_FP8_POSITIVE = _FP8[:0x7F]  # 0 .. 448, ascending


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """bf16 bits (uint16) -> float32: the upper half of a float32."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits, rounded to nearest even; NaN stays NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    return np.where(nan, (u >> 16) | 0x40, rounded).astype(np.uint16)


def fp8_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """E4M3FN bits (uint8) -> float32."""
    return _FP8[np.asarray(bits, dtype=np.uint8)]


def float32_to_fp8_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> E4M3FN bits, rounded to nearest even and saturated at +-448 (as TensorRT's
    FP8 quantization saturates); NaN -> NaN."""
    f = np.asarray(x, dtype=np.float32)
    mag = np.minimum(np.abs(f), _FP8_MAX)
    hi = np.clip(np.searchsorted(_FP8_POSITIVE, mag, side="left"), 0, len(_FP8_POSITIVE) - 1)
    lo = np.maximum(hi - 1, 0)
    d_lo, d_hi = mag - _FP8_POSITIVE[lo], _FP8_POSITIVE[hi] - mag
    even_hi = (hi & 1) == 0
    pick = np.where((d_hi < d_lo) | ((d_hi == d_lo) & even_hi), hi, lo)
    out = pick.astype(np.uint8) | np.where(np.signbit(f), 0x80, 0).astype(np.uint8)
    return np.where(np.isnan(f), np.uint8(0x7F), out).astype(np.uint8)


def encode_input(array: np.ndarray, trt_type: str) -> np.ndarray:
    """What to hand TensorRT for an input of type `trt_type`: the array itself, or the bits of
    bf16/fp8 (an array already in that type, as ml_dtypes makes it, is viewed, not rounded)."""
    bits = BITS_TYPES.get(trt_type)
    if bits is None:
        return array
    if array.dtype.name == {"BF16": "bfloat16", "FP8": "float8_e4m3fn"}[trt_type]:
        return np.ascontiguousarray(array).view(bits)
    f = np.asarray(array, dtype=np.float32)
    return float32_to_bf16_bits(f) if trt_type == "BF16" else float32_to_fp8_bits(f)


def decode_output(raw: np.ndarray, trt_type: str, shape: tuple[int, ...]) -> np.ndarray:
    """A new array (never a view of `raw`, which the runner reuses) from an output's raw bytes:
    numpy types as they are, bf16 and fp8 as float32."""
    count = int(np.prod(shape, dtype=np.int64))
    data = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    if trt_type in NUMPY_TYPES:
        dt = NUMPY_TYPES[trt_type]
        return data[: count * dt.itemsize].view(dt).reshape(shape).copy()
    if trt_type == "BF16":
        return bf16_bits_to_float32(data[: count * 2].view(np.uint16)).reshape(shape)
    if trt_type == "FP8":
        return fp8_bits_to_float32(data[:count]).reshape(shape)
    raise ValueError(f"TensorRT output type {trt_type} cannot be read as numpy")
