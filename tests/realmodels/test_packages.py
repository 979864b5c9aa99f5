"""Slow tier: every real model packaged with the default pipeline, its labelled data and its
task metric (`--set parity.task.metric=scripts.realdata.metrics:<id> --set
parity.task.max_drop=0`), as a user with labelled data would build it. Verify scores the task
on the parity samples for the reference and every artifact and fails any artifact whose score
drops; the package is loaded as serving loads it, and its pick does the model's held-out task
as well as the original model does on ONNX Runtime (text read, class right, boxes found,
speech and notes found, embeddings rank), scored by the same metric.

Models come from scripts/fetch_models.py (a set-up step) and ../shared/models; a model or a
data tool that is absent skips with the reason. CI-sized: the `cpu` target only (serving on
an x86-64 CI host picks a cpu artifact whatever else the package holds; the full default
`gpu,cpu,arm` runs in scripts/realmodels_report.py), 8 calibration feeds, the model's own
parity sample count (the metric needs its task items), and a one-second latency budget per
artifact (3 s for the pick's settings sweep), which bounds build time, not the verdicts
checked here. Nothing here asserts a time.
LIGHTER leaves variants out of one model's build where CI's 30 minutes need it (the full
default pipeline of every model runs in perf/picks.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.serving.loader import load
from compiler.serving.manifest import read_manifest
from scripts.make_data import write_model_data
from scripts.realdata.catalog import MODELS
from scripts.realdata.packages import build_command, describe_task, run_build, verdicts
from scripts.realdata.task import ort_runner

pytestmark = pytest.mark.slow

TARGETS = "cpu"
CALIBRATION = 8
# the pick's runtime-settings sweep runs (serving loads the pick with what it adopted), capped
BUDGET = ["--set", "latency.max_seconds=1", "--set", "tuning.seconds_per_artifact=3"]
# layout_cdla (PicoDet, 800x608 pages) took 343-415 s here, the longest test, with its ONNX
# Runtime int8 searches (a per-layer ranking of its convolutions, 250 s) beside NNCF's accuracy
# control on 2 cores: those two artifacts failed its task in both full builds of 2026-12-01
# (1.14-1.17x) and were not its pick; the ONNX Runtime int8 loop is checked on the other models.
# NNCF then still ranked its ~100 quantizer groups on all 8 gate pages (300 s of 346): ranked
# on the 4 pages int8 hurts most (NNCF's own subset choice) it kept the same one convolution
# in float and passed the same task score, in 163 s (2026-12-01). That was still the longest
# test (217-225 s) when whole CI runs took 27-29 of their 30 minutes on a slow host
# (2026-12-02), so its ov-int8 is NNCF's plain int8 here (62 s), judged by the task like
# every artifact: NNCF's accuracy control on a real model is checked on ppocr_det's build,
# every artifact of layout_cdla's default pipeline in perf/picks.py.
# The full-range ONNX Runtime int8 (`ort-int8`, u8s8) is left out of the three builds where
# its accuracy loop cost the most: on an AVX2 CI host (2026-12-03) it ran 72 s on ppocr_det,
# 34 s on basic_pitch and 13 s on ppocr_rec, judged there as simulated Q/DQ (its sums
# saturate on that class), while CI runs took 31 of their 30 minutes; `ort-int8-rr` runs
# the same loop on them (the other seven models build both), and the full pipeline of every
# model runs in perf/picks.py.
# ppocr_det's reduced-range ONNX Runtime int8 then ran its loop for 108 s beside NNCF's
# accuracy control (120 s) and still failed its task (one page of 8 worse, 2026-12-03, AVX2;
# it is not its pick on any class measured): that build keeps NNCF's accuracy control, the one
# real-model run of it, and leaves both ONNX Runtime int8 variants to the other models.
NO_FULL_RANGE_ORT_INT8 = ["--set", "cpu.ort-int8.enabled=false"]
NO_ORT_INT8 = [*NO_FULL_RANGE_ORT_INT8, "--set", "cpu.ort-int8-rr.enabled=false"]
LIGHTER = {
    "layout_cdla": [*NO_ORT_INT8, "--set", "cpu.ov-int8.nncf.accuracy_control.enabled=false"],
    "ppocr_det": NO_ORT_INT8,
    "basic_pitch": NO_FULL_RANGE_ORT_INT8,
    "ppocr_rec": NO_FULL_RANGE_ORT_INT8,
}


# basic_pitch's ov-int8 passed its verdict on 8 parity samples (outputs within 0.04 of their
# scale, none worse) and still found 3 pitches that were not played on the held-out chords where
# the original finds 1 and ov-bf16 none: it is worse on about 1 chord in 8 (5 of 40), so the
# catalogue now writes 40 parity samples for it and its task check fails it (2026-12-02, AMX).
# Which of ov-int8 and ov-bf16 would be served had rested on their timing: with the 1 s budget
# one CI run (2026-12-02) measured ov-bf16 at 1.40x [0.81-1.92], not shown faster than the
# reference. The default budget (3 s) is what a user's build times with; it keeps the choice
# between the passing artifacts out of the host's noise. docs/decisions.md says the blind spot.
STEADIER = {"basic_pitch": ["--set", "latency.max_seconds=3"]}


@pytest.mark.parametrize("model_id", list(MODELS))
def test_serving_pick_does_the_task_as_well_as_the_original(model_id: str, tmp_path: Path) -> None:
    model = MODELS[model_id]
    why = model.missing()
    if why:
        pytest.skip(why)
    calibration, samples = tmp_path / "calibration", tmp_path / "sample"
    write_model_data(model_id, calibration, "calibration", CALIBRATION)
    write_model_data(model_id, samples, "sample")
    package = tmp_path / "pkg"
    extra = BUDGET + LIGHTER.get(model_id, []) + STEADIER.get(model_id, [])
    cmd = build_command(model, package, TARGETS, tmp_path / "cache", (calibration, samples), extra)
    done = run_build(cmd, tmp_path / "build.log")
    assert done.returncode == 0, (
        f"{model_id}: compile-pkg exit {done.returncode}\n{done.stderr[-3000:]}"
    )

    judged = [v for v in verdicts(read_manifest(package)) if v.parity in ("passed", "failed")]
    assert judged, f"{model_id}: no artifact has a parity verdict"
    for v in judged:  # the hook ran on the labels; a task drop is a parity failure
        assert v.task is not None and v.task.status != "not-run", (
            f"{model_id}: {v.id}: task {describe_task(v.task)}"
        )
        assert not (v.task_failed and v.parity == "passed"), f"{model_id}: {v.describe()}"

    original = model.check(ort_runner(model.path))
    with load(package) as session:
        picked = model.check(session.run)
        pick = session.artifact
    how = "the reference itself: no artifact was measured faster than it"
    if pick != "reference":
        chosen = next(v for v in judged if v.id == pick)
        assert chosen.task is not None and chosen.task.status == "passed", chosen.describe()
        how = chosen.describe()
    assert picked.as_well_as(original), (
        f"{model_id}: serving picked {pick} ({how}), which scored "
        f"{picked.summary} on the held-out task set; the original scored {original.summary}"
    )
