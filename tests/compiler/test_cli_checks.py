"""Checks before work (issue 14, item 2): bad data paths, npz keys, dtypes and shapes, and a bad
model stop the build with exit 2 and one error line, before any pass or compile runs, with no
cascade of "upstream failed" lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny_cnn.onnx"
ORT_ONLY = str(Path(__file__).with_name("ort_only.yaml"))


def build(tmp_path: Path, *more: str) -> subprocess.CompletedProcess[str]:
    args = [str(EXAMPLE), "--targets", "cpu,arm", "--config", ORT_ONLY, "--no-cache"]
    return subprocess.run(
        [sys.executable, "-m", "compiler.cli", *args, "-o", str(tmp_path / "pkg"), *more],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_one_line_before_work(r: subprocess.CompletedProcess[str], message: str) -> None:
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2, r.stderr
    assert len(errors) == 1 and message in errors[0], r.stderr
    assert "upstream" not in r.stderr and "Traceback" not in r.stderr
    assert "compile" not in r.stderr and "verify" not in r.stderr  # nothing downstream ran
    assert r.stdout == ""


def test_missing_sample_data_folder(tmp_path: Path) -> None:
    r = build(tmp_path, "--sample-data", str(tmp_path / "nope"))
    assert_one_line_before_work(r, "--sample-data")
    assert "no such file or folder" in r.stderr and "ran normalize" not in r.stderr


def test_a_folder_without_npz_files(tmp_path: Path) -> None:
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "readme.txt").write_text("x")
    r = build(tmp_path, "--calibration-data", str(tmp_path / "calib"))
    assert_one_line_before_work(r, "holds no .npz files")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"image": np.zeros((1, 3, 32, 32), np.float32)}, "missing inputs ['input']"),
        ({"input": np.zeros((1, 3, 32, 32), np.int64)}, "input"),
        ({"input": np.zeros((1, 3, 16, 16), np.float32)}, "input"),
    ],
    ids=["wrong-key", "wrong-dtype", "wrong-shape"],
)
def test_npz_against_the_contract(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    data = tmp_path / "samples.npz"
    np.savez(data, **arrays)  # type: ignore[arg-type]
    r = build(tmp_path, "--sample-data", str(data))
    assert_one_line_before_work(r, message)
    assert str(data) in r.stderr  # names the file at fault


def test_not_an_onnx_model(tmp_path: Path) -> None:
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not a protobuf at all" * 10)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "compiler.cli",
            str(bogus),
            "--targets",
            "cpu",
            "-o",
            str(tmp_path / "o"),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert_one_line_before_work(r, str(bogus))
