"""Slow tier: int8 on magika (file types from its bytes), which plain int8 breaks on both
quantizers (its LayerNorms are written out as E[x^2] - E[x]^2, its GELU as a polynomial):
the accuracy loops keep that arithmetic float and the int8 model reads the held-out files as
well as the float model does. Labelled files and the task metric are scripts/realdata's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.core.tolerance import TaskSpec
from passes.accuracy import AccuracyAwareConfig
from passes.base import PassResult
from passes.nncf import NncfConfig, NncfPass
from passes.quantize import QuantizeConfig, QuantizePass
from passes.simplify import SimplifyConfig, SimplifyPass
from scripts.realdata.catalog import model as real_model
from scripts.realdata.task import Feed, Runner
from tests.passes.builders import context, run

pytestmark = pytest.mark.slow

MAGIKA = real_model("magika")


def _int8(tmp: Path, backend: str) -> tuple[onnx.ModelProto, PassResult]:
    if why := MAGIKA.missing():
        pytest.skip(why)
    model = onnx.load(MAGIKA.path)
    calibration = MAGIKA.feeds(16, 0)
    samples = MAGIKA.items(24, 1)
    model = SimplifyPass(SimplifyConfig())(model, context(model, tmp, calibration)).model
    ctx = context(
        model,
        tmp,
        calibration,
        task=TaskSpec(MAGIKA.metric, max_drop=0.0),
        validation=lambda: [f for f, _ in samples],
        labels=lambda: [y for _, y in samples],
    )
    if backend == "ort":
        cfg = QuantizeConfig(accuracy_aware=AccuracyAwareConfig(enabled=True))
        return model, QuantizePass(cfg)(model, ctx)
    pytest.importorskip("nncf")
    return model, NncfPass(NncfConfig())(model, ctx)  # accuracy control: auto, on (user data)


def _runner(model: onnx.ModelProto) -> Runner:
    def go(feed: Feed) -> dict[str, np.ndarray]:
        return run(model, [feed])[0]

    return go


@pytest.mark.parametrize("backend", ["ort", "nncf"])
def test_magika_int8_reads_held_out_files_as_float_does(tmp_path: Path, backend: str) -> None:
    model, result = _int8(tmp_path, backend)
    loop = result.record["accuracy_aware" if backend == "ort" else "accuracy_control"]
    assert loop["gate_before"]["passed"] is False  # plain int8 misreads files
    assert loop["arithmetic_float"]["kept"] is True
    assert loop["gate_after"]["passed"] is True
    assert result.record["quantized_ops"]  # Conv and MatMuls still int8
    original, int8 = MAGIKA.check(_runner(model)), MAGIKA.check(_runner(result.model))
    assert int8.as_well_as(original), (int8.summary, original.summary)
