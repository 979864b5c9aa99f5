"""report.md and `inspect` say how each artifact was made and measured (issue 14, item 9): the
passes with their key settings (calibration method and sample count, excluded nodes), the
precision, where each figure was measured (native, cross-host), and sizes people read."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny_cnn.onnx"
CONFIG = """
targets:
  cpu:
    pipeline: none
    variants:
      ort-int8:
        passes:
          - {name: quantize, mode: static, calibration_method: entropy, exclude_nodes: [conv0]}
        compile: {backend: onnxruntime}
  arm:
    pipeline: none
    variants:
      ort-fp32: {compile: {backend: onnxruntime}}
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compiler.cli", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    (root / "config.yaml").write_text(CONFIG)
    calib = root / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        np.savez(calib / f"{i}.npz", input=rng.random((1, 3, 32, 32), dtype=np.float32))
    r = cli(
        str(EXAMPLE),
        "--config",
        str(root / "config.yaml"),
        "--calibration-data",
        str(calib),
        "--set",
        "latency.runs=3",
        "--no-cache",
        "-o",
        str(root / "pkg"),
    )
    assert r.returncode == 0, r.stderr
    return root / "pkg"


def test_report_says_how_each_artifact_was_made(package: Path) -> None:
    report = (package / "reports" / "report.md").read_text()
    made = report.split("## How each artifact was made")[1].split("\n## ")[0]
    int8 = made.split("`cpu/ort-int8`")[1].split("- `")[0]
    assert "(int8): quantize -> onnxruntime" in int8
    assert "calibration_method: entropy" in int8  # the setting given
    assert "calibration.method: entropy" in int8 and "calibration.source: user" in int8
    assert "calibration.samples: " in int8 and "excluded_nodes: [conv0" in int8
    assert "`arm/ort-fp32` (fp32): onnxruntime" in made
    assert "| KiB" not in report and " KiB |" in report  # sizes people read
    # no task metric: the report says the verdicts rest on the outputs, and what would change it
    task = report.split("## Task")[1].split("\n## ")[0]
    assert "No task metric was scored" in task and "parity.task.metric" in task


def test_report_says_where_each_figure_was_measured(package: Path) -> None:
    report = (package / "reports" / "report.md").read_text()
    where = report.split("## Where each figure was measured")[1]
    host = platform.node()  # the host is named, then its arch and CPU
    assert f"`arm/ort-fp32` parity passed, cross-host, on {host} (x86_64" in where
    assert "`cpu/ort-int8` parity" in where and f", native, on {host} (x86_64" in where


def test_inspect_shows_the_recipe_and_the_measurement_mode(package: Path) -> None:
    r = cli("inspect", str(package))
    assert r.returncode == 0, r.stderr
    flat = " ".join(r.stdout.split())
    assert "cross-host" in flat and "native" in flat
    assert "calibration_method=entropy" in flat and "excluded_nodes=[conv0" in flat
    assert "KiB" in flat
    doc = json.loads(cli("inspect", str(package), "--json").stdout)
    rows = {a["id"]: a for a in doc["artifacts"]}
    arm, int8 = rows["arm/ort-fp32"], rows["cpu/ort-int8"]
    assert arm["parity"] == "passed" and arm["parity_mode"] == "cross-host"
    assert int8["precision"] == "int8" and int8["parity_mode"] == "native"
    quantize = int8["passes"][0]
    assert quantize["name"] == "quantize"
    assert quantize["settings"]["calibration_method"] == "entropy"
    assert quantize["facts"]["calibration.source"] == "user"
    assert quantize["facts"]["calibration.samples"] >= 1
