"""perf/picks.py's pure parts: the batch a model's contract admits and the geomean of the
table. No timing."""

from __future__ import annotations

import math

import numpy as np

from compiler.core.contract import Contract, DimRange, TensorSpec
from perf.picks import tile_batch
from perf.picks_report import geomean_of


def _contract(shape: list[int | str], dims: dict[str, DimRange]) -> Contract:
    return Contract(
        inputs=[TensorSpec(name="x", dtype="float32", shape=shape)],
        outputs=[TensorSpec(name="y", dtype="float32", shape=shape)],
        dims=dims,
    )


def test_tile_batch_repeats_rows_up_to_the_contract_range() -> None:
    feed = {"x": np.arange(6, dtype=np.float32).reshape(1, 6)}
    tiled, batch = tile_batch(_contract(["n", 6], {"n": DimRange(min=1, opt=1, max=4)}), feed, 8)
    assert batch == 4 and tiled["x"].shape == (4, 6)
    assert np.array_equal(tiled["x"][3], feed["x"][0])


def test_tile_batch_leaves_models_without_a_batch_dim_alone() -> None:
    feed = {"x": np.zeros((1, 6), dtype=np.float32)}
    assert tile_batch(_contract([1, 6], {}), feed, 8) == (feed, 1)
    fixed = _contract(["n", 6], {"n": DimRange(min=1, opt=1, max=1)})
    assert tile_batch(fixed, feed, 8)[1] == 1


def test_geomean_skips_missing_and_non_positive_values() -> None:
    assert geomean_of([]) is None
    assert math.isclose(geomean_of([2.0, 8.0]) or 0, 4.0)
    assert math.isclose(geomean_of([2.0, 8.0, 0.0, float("nan")]) or 0, 4.0)
