"""bf16 and fp8 engine I/O (targets/tensorrt/dtypes.py), checked bit for bit against ml_dtypes
(the bfloat16/float8 types onnx itself uses), and the copies the runtime hands back."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from targets.tensorrt.dtypes import (
    bf16_bits_to_float32,
    decode_output,
    encode_input,
    float32_to_bf16_bits,
    float32_to_fp8_bits,
    fp8_bits_to_float32,
)

_SPECIAL = np.array([0.0, -0.0, 1e-40, -1e-40, 3.0e38, -3.4e38, np.inf, -np.inf], np.float32)


def _values() -> np.ndarray:
    x = np.random.default_rng(0).normal(scale=3.0, size=20000).astype(np.float32)
    return np.concatenate([x, _SPECIAL])


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def test_bf16_round_trip_matches_ml_dtypes() -> None:
    x = _values()
    assert np.array_equal(float32_to_bf16_bits(x), x.astype(ml_dtypes.bfloat16).view(np.uint16))
    every = np.arange(1 << 16, dtype=np.uint16)
    want = every.view(ml_dtypes.bfloat16).astype(np.float32)
    assert _same(bf16_bits_to_float32(every), want)
    assert np.isnan(bf16_bits_to_float32(float32_to_bf16_bits(np.array([np.nan], np.float32))))


def test_fp8_e4m3_round_trip_matches_ml_dtypes() -> None:
    every = np.arange(256, dtype=np.uint8)
    table = fp8_bits_to_float32(every)
    assert _same(table, every.view(ml_dtypes.float8_e4m3fn).astype(np.float32))
    x = np.clip(_values(), -448, 448)
    mids = ((table[:126] + table[1:127]) / 2).astype(np.float32)  # ties: round to even
    for v in (x, mids, -mids):
        assert np.array_equal(
            float32_to_fp8_bits(v), v.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
        )
    # TensorRT saturates FP8 at +-448 (ml_dtypes makes NaN there); NaN stays NaN
    assert float32_to_fp8_bits(np.array([1e4, -1e4, np.nan], np.float32)).tolist() == [
        0x7E,
        0xFE,
        0x7F,
    ]


@pytest.mark.parametrize(
    ("trt_type", "ml"), [("BF16", ml_dtypes.bfloat16), ("FP8", ml_dtypes.float8_e4m3fn)]
)
def test_inputs_go_in_as_bits(trt_type: str, ml: type) -> None:
    x = np.linspace(-4, 4, 24, dtype=np.float32).reshape(3, 8)
    as_float = encode_input(x, trt_type)  # a float32 feed is rounded
    already = encode_input(x.astype(ml), trt_type)  # one already in that type is viewed
    assert as_float.dtype.itemsize == np.dtype(ml).itemsize and as_float.shape == x.shape
    assert np.array_equal(as_float, already)
    assert encode_input(x, "FLOAT") is x and encode_input(x, "") is x


@pytest.mark.parametrize(
    ("trt_type", "values"),
    [
        ("FLOAT", np.array([[1.5, -2.0, 3.25]], np.float32)),
        ("INT64", np.array([[0, 1], [2, 3]], np.int64)),
        ("BOOL", np.array([True, False, True])),
        ("BF16", np.array([[1.5, -2.0, 3.25]], np.float32)),
        ("FP8", np.array([[1.5, -2.0, 3.25]], np.float32)),
    ],
)
def test_outputs_decode_from_raw_bytes_into_new_arrays(trt_type: str, values: np.ndarray) -> None:
    bits = encode_input(values, trt_type) if trt_type in ("BF16", "FP8") else values
    raw = np.concatenate([bits.reshape(-1).view(np.uint8), np.zeros(7, np.uint8)])  # spare room
    got = decode_output(raw, trt_type, values.shape)
    np.testing.assert_array_equal(got, values)
    assert got.flags.writeable and not np.shares_memory(got, raw)
    raw[:] = 0  # the runner reuses its buffer for the next request
    np.testing.assert_array_equal(got, values)
    with pytest.raises(ValueError, match="INT4"):
        decode_output(raw, "INT4", (2,))
