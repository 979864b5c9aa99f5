"""Slow tier: every real model packaged with the default pipeline and real data, loaded as
serving loads it, and its pick does the model's task as well as the original model does on
ONNX Runtime (text read, class right, boxes found, speech and notes found, embeddings rank).

Models come from scripts/fetch_models.py (a set-up step) and ../shared/models; a model or a
data tool that is absent skips with the reason. CI-sized: the `cpu` target only (serving on
an x86-64 CI host picks a cpu artifact whatever else the package holds; the full default
`gpu,cpu,arm` runs in scripts/realmodels_report.py), small data sets and a one-second latency
budget per artifact, which bounds build time, not the verdicts checked here. Nothing here
asserts a time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from compiler.serving.loader import load
from scripts.make_data import write_model_data
from scripts.realdata.catalog import MODELS
from scripts.realdata.task import ort_runner

pytestmark = pytest.mark.slow

TARGETS = "cpu"
COUNTS = {"calibration": 8, "sample": 4}
BUDGET = ["--set", "latency.max_seconds=1"]


@pytest.mark.parametrize("model_id", list(MODELS))
def test_serving_pick_does_the_task_as_well_as_the_original(model_id: str, tmp_path: Path) -> None:
    model = MODELS[model_id]
    why = model.missing()
    if why:
        pytest.skip(why)
    data = {split: tmp_path / split for split in COUNTS}
    for split, count in COUNTS.items():
        write_model_data(model_id, data[split], split, count)
    package = tmp_path / "pkg"
    cmd = [sys.executable, "-m", "compiler.cli", str(model.path), "--targets", TARGETS]
    cmd += ["-o", str(package), "--cache-dir", str(tmp_path / "cache"), *BUDGET]
    cmd += ["--calibration-data", str(data["calibration"]), "--sample-data", str(data["sample"])]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, (
        f"{model_id}: compile-pkg exit {done.returncode}\n{done.stderr[-3000:]}"
    )

    original = model.check(ort_runner(model.path))
    with load(package) as session:
        picked = model.check(session.run)
        pick = session.artifact
    assert picked.as_well_as(original), (
        f"{model_id}: serving picked {pick}, which scored {picked.summary}; "
        f"the original scored {original.summary}"
    )
