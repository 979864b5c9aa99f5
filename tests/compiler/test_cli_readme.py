"""The README a new user follows (issue 14, item 8): a virtual environment and the pip extras,
bring-your-own data whose example runs, five lines of Python that load a package and run it,
and a set-up script that works on an externally managed Python."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ORT_ONLY = str(Path(__file__).with_name("ort_only.yaml"))


def section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_setup_shows_a_venv_the_extras_and_the_two_commands() -> None:
    setup = section("Set up and run (fresh Debian 12 / Python 3.11 machine)")
    shell = "\n".join(code_blocks(setup, "sh"))
    assert "python3 -m venv .venv && . .venv/bin/activate" in shell
    assert 'pip install -e ".[openvino,tvm]"' in shell
    assert "scripts/setup.sh && compile-pkg " in shell and "scripts/test.sh" in shell


def test_bring_your_own_data_example_builds_with_user_data(tmp_path: Path) -> None:
    byo = section("Bring your own model and data")
    (snippet,) = code_blocks(byo, "python")
    r = run([sys.executable, "-c", snippet], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "data" / "calib").glob("*.npz"))) == 16
    (command,) = code_blocks(byo, "sh")
    args = command.replace("\\\n", " ").split()
    assert args[:2] == ["compile-pkg", "examples/tiny_cnn.onnx"]
    args[1] = str(ROOT / args[1])
    more = ["--config", ORT_ONLY, "--no-cache", "--set", "latency.runs=3"]
    r = run([sys.executable, "-m", "compiler.cli", *args[1:], *more], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "dist" / "mine" / "manifest.json").read_text())
    assert manifest["reference"]["samples_source"] == "user"
    assert manifest["reference"]["calibration_source"] == "user"


def test_the_python_snippet_loads_and_runs_a_package(tmp_path: Path) -> None:
    (snippet,) = code_blocks(section("Use a package from Python"), "python")
    assert len([line for line in snippet.splitlines() if line.strip()]) <= 6
    example = str(ROOT / "examples" / "tiny_cnn.onnx")
    built = run(
        [sys.executable, "-m", "compiler.cli", example, "--targets", "cpu", "--config", ORT_ONLY]
        + ["--no-cache", "--set", "latency.runs=3", "-o", "dist/tiny_cnn"],
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    r = run([sys.executable, "-c", snippet], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()
    # the artifact, or the reference where the artifact was not measured faster than it
    assert re.match(r"(cpu/ort-fp32|reference) - ", first) and re.fullmatch(r"\[\d\]", second)


@pytest.mark.skipif(
    not Path("/usr/bin/python3").exists()
    or not Path(
        sysconfig.get_path("stdlib", vars={"installed_base": "/usr", "base": "/usr"}),
        "EXTERNALLY-MANAGED",
    ).exists(),
    reason="needs Debian's externally managed /usr/bin/python3",
)
def test_setup_uses_a_venv_on_an_externally_managed_python(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": "/usr/bin/python3"}
    env.pop("VIRTUAL_ENV", None)
    r = subprocess.run(
        [str(ROOT / "scripts" / "setup.sh"), "--which"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.strip() == ".venv/bin/python"
    r = subprocess.run(
        [str(ROOT / "scripts" / "setup.sh"), "--which"], capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.strip() != ".venv/bin/python"  # CI's own python3
