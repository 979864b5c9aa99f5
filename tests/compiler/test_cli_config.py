"""Config on the command line (issue 14, item 7): a config file listing targets builds only
those; `compile-pkg schema config|manifest` publishes the JSON Schemas; `--data-loader` is the
config's `data.loader`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

from compiler.serving.manifest import SCHEMA_PATH

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny_cnn.onnx"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compiler.cli", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_config_listing_only_cpu_builds_only_cpu(tmp_path: Path) -> None:
    config = tmp_path / "cpu.yaml"
    config.write_text("targets:\n  cpu: {pipeline: default}\n")
    r = cli(str(EXAMPLE), "--config", str(config), "--print-dag")
    assert r.returncode == 0, r.stderr
    ids = [line.split()[0] for line in r.stdout.splitlines()]
    assert any(i.startswith("cpu/") for i in ids)
    assert not any(i.startswith(("gpu/", "arm/")) for i in ids)
    r = cli(str(EXAMPLE), "--config", str(config), "--targets", "arm", "--print-dag")
    assert "arm/ort-fp32:compile" in r.stdout and "cpu/" not in r.stdout


def test_schema_command_publishes_config_and_manifest_schemas(tmp_path: Path) -> None:
    r = cli("schema", "config")
    assert r.returncode == 0, r.stderr
    schema = json.loads(r.stdout)
    example = ROOT / "tests" / "compiler" / "rapid_subset.yaml"
    jsonschema.validate(yaml.safe_load(example.read_text()), schema)
    r = cli("schema", "manifest")
    assert json.loads(r.stdout) == json.loads(SCHEMA_PATH.read_text())
    r = cli("schema", "bogus")
    assert r.returncode == 2 and "choose from config, manifest, build" in r.stderr


def test_data_loader_flag_feeds_the_build(tmp_path: Path) -> None:
    loader = tmp_path / "feeds.py"
    loader.write_text(
        "import numpy as np\n\n"
        "def load():\n"
        "    rng = np.random.default_rng(7)\n"
        "    return [{'input': rng.random((1, 3, 32, 32), dtype=np.float32)} for _ in range(4)]\n"
    )
    config = ROOT / "tests" / "compiler" / "ort_only.yaml"
    out = tmp_path / "pkg"
    args = [str(EXAMPLE), "--targets", "cpu", "--config", str(config), "--no-cache", "-o", str(out)]
    r = cli(*args, "--data-loader", f"{loader}:load", "--set", "latency.runs=3")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["reference"]["samples_source"] == "user"
    r = cli(*args, "--data-loader", f"{loader}:nothing_here")
    assert r.returncode == 2 and "nothing_here" in r.stderr
