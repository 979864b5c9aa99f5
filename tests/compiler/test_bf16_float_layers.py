"""OpenVINO bf16 judged at build (targets/openvino/float_layers.py): the compile node hands the
backend the package's bf16 gate on user data only, and the gate's tolerances enter its key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.compiler.helpers import build, statuses
from tests.targets.builders import offset_diff_net, offset_images, save

pytest.importorskip("openvino")

RAW = {
    "targets": {
        "cpu": {
            "variants": {
                "ov-bf16": {"compile": {"backend": "openvino", "inference_precision": "bf16"}}
            }
        }
    }
}


def _data(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True)
    for i, feed in enumerate(offset_images(12, seed)):
        np.savez(folder / f"{i:02d}.npz", **feed)
    return folder


def _notes(outcome) -> list[str]:  # type: ignore[no-untyped-def]
    (artifact,) = [a for a in outcome.manifest.artifacts if a.id == "cpu/ov-bf16"]
    return artifact.notes


def test_bf16_is_judged_on_user_data_only(tmp_path: Path) -> None:
    model = save(offset_diff_net(), tmp_path / "src")
    data = {"sample_data": _data(tmp_path / "s", 1), "calibration_data": _data(tmp_path / "c", 2)}
    judged = build(model, tmp_path / "pkg", tmp_path / "cache", ("cpu",), RAW, **data)
    (note,) = [n for n in _notes(judged) if "bf16" in n]
    if note.startswith("bf16 not judged"):  # a CPU without native bf16: nothing to judge
        assert note.endswith("this CPU compiles bf16 as f32")
    else:  # bf16 rounds the offset input: the layer that reads it runs f32, and then it passes
        assert note.startswith("1 of 3 conv/matmul layers kept in f32 (the first 1: diff)")
        assert judged.manifest.measurements["cpu/ov-bf16"].parity[-1].status == "passed"
    # the gate's bounds are in the compile node's key: other bounds, another build
    again = build(model, tmp_path / "pkg2", tmp_path / "cache", ("cpu",), RAW, **data)
    assert statuses(again)["cpu/ov-bf16:compile"] == "cached"
    looser = ["parity.tolerances.bf16.max_rel_l2=0.5"]
    other = build(model, tmp_path / "pkg3", tmp_path / "cache", ("cpu",), RAW, looser, **data)
    assert statuses(other)["cpu/ov-bf16:compile"] == "ran"
    # on generated data there is nothing to judge a choice on: bf16 throughout, no gate
    generated = build(model, tmp_path / "pkg4", tmp_path / "cache", ("cpu",), RAW)
    assert not [n for n in _notes(generated) if "bf16" in n]
