from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import jsonschema
import pytest

from compiler.core.errors import PackageError
from compiler.packaging.write import pack
from compiler.serving.manifest import SCHEMA_PATH, Manifest, json_schema, migrate, read_manifest
from tests.compiler.helpers import build

DATA = Path(__file__).with_name("data")


def _artifact_bytes(pkg: Path) -> dict[str, bytes]:
    return {
        p.relative_to(pkg).as_posix(): p.read_bytes()
        for p in sorted((pkg / "artifacts").rglob("*"))
        if p.is_file()
    }


def test_two_builds_without_cache_are_byte_identical(cnn_path: Path, tmp_path: Path) -> None:
    a = build(cnn_path, tmp_path / "a", None)
    b = build(cnn_path, tmp_path / "b", None)
    assert _artifact_bytes(tmp_path / "a") == _artifact_bytes(tmp_path / "b")
    for name in ("inputs.npz", "outputs.npz", "model.onnx"):
        assert (tmp_path / "a/reference" / name).read_bytes() == (
            tmp_path / "b/reference" / name
        ).read_bytes()
    assert a.manifest.core_sha256 == b.manifest.core_sha256
    assert a.manifest.build.started_at  # run-to-run fields exist, outside the core
    with zipfile.ZipFile(tmp_path / "a/reference/inputs.npz") as z:  # deflated: padding
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}


def test_manifest_validates_against_the_shipped_schema(mlp_path: Path, tmp_path: Path) -> None:
    build(mlp_path, tmp_path / "p", None)
    doc = json.loads((tmp_path / "p/manifest.json").read_text())
    jsonschema.validate(doc, json.loads(SCHEMA_PATH.read_text()))
    assert doc["schema_version"] == 2
    files = {f["path"] for a in doc["artifacts"] for f in a["files"]}
    assert files == {"artifacts/cpu.ort-fp32/model.onnx", "artifacts/arm.ort-fp32/model.onnx"}
    assert not any(
        str(tmp_path) in json.dumps(doc[k]) for k in ("source", "artifacts", "provenance")
    )


def test_shipped_schema_is_current() -> None:
    """Golden file: regenerate with `python -m compiler.serving.manifest` after changing the models."""
    assert json.loads(SCHEMA_PATH.read_text()) == json.loads(
        json.dumps(json_schema(), sort_keys=True)
    )


def test_v0_manifest_migrates(mlp_path: Path, tmp_path: Path) -> None:
    build(mlp_path, tmp_path / "p", None)
    doc = json.loads((tmp_path / "p/manifest.json").read_text())
    v0 = {k: v for k, v in doc.items() if k not in ("schema_version", "measurements")}
    for a in v0["artifacts"]:
        a["parity"] = {"status": "passed"}
    m = Manifest.model_validate(migrate(v0))
    assert m.schema_version == 2
    assert [r.status for r in m.measurements["cpu/ort-fp32"].parity] == ["passed"]


def test_v1_manifest_of_a_real_build_migrates(tmp_path: Path) -> None:
    """tests/compiler/data/manifest.v1.json: tiny_cnn built by compile-pkg before schema 2."""
    shutil.copyfile(DATA / "manifest.v1.json", tmp_path / "manifest.json")
    m = read_manifest(tmp_path)
    assert m.schema_version == 2
    cpu = m.artifact("cpu/ort-fp32")
    assert cpu.runtime is not None and cpu.runtime.backend == "onnxruntime"
    assert m.policy.parity.tolerance("fp32", "y").atol == 1e-4
    assert m.measurements["cpu/ort-fp32"].parity[0].status == "passed"
    assert all(r.name == "fuse" and r.details for r in m.build.pass_log.values())


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(PackageError, match="newer than this compile-pkg reads"):
        read_manifest(tmp_path)


def test_pack_is_reproducible(mlp_path: Path, tmp_path: Path) -> None:
    build(mlp_path, tmp_path / "p", None)
    first = pack(tmp_path / "p", tmp_path / "one.tar.gz").read_bytes()
    os.utime(tmp_path / "p/manifest.json", (1, 1))
    second = pack(tmp_path / "p", tmp_path / "two.tar.gz").read_bytes()
    assert first == second


def _valid_or_absent(pkg: Path) -> str:
    if not pkg.exists():
        return "absent"
    m = read_manifest(pkg)  # raises if half-written
    for a in m.artifacts:
        for f in a.files:
            assert (pkg / f.path).is_file()
    return m.core_sha256


def test_kill_during_build_leaves_old_package_or_none(
    cnn_path: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    out = tmp_path / "pkg"
    config = str(Path(__file__).with_name("ort_only.yaml"))
    cmd = [
        sys.executable,
        "-m",
        "compiler.cli",
        str(cnn_path),
        "--targets",
        "cpu,arm",
        "-o",
        str(out),
        "--config",
        config,
        "--no-cache",
        "--set",
        "latency.runs=200",
        "--set",
        "latency.warmup=20",
    ]
    # a short temporary folder, so multiprocessing's socket fits in the run's scratch folder
    # (compiler/core/files.py process_scratch)
    temp = Path(tempfile.mkdtemp(prefix="cpkg-test-"))
    request.addfinalizer(lambda: shutil.rmtree(temp, ignore_errors=True))
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "TMPDIR": str(temp),
    }
    seen = set()
    for delay in (0.5, 1.5, 3.0):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen.add(_valid_or_absent(out))
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".pkg.")]
        # a killed writer may leave its staging folder behind, never a half-written `pkg`
        assert all(".tmp-" in n or ".old-" in n or ".new-" in n for n in leftovers)
    subprocess.run(cmd[:-4], env=env, check=True, capture_output=True)
    assert _valid_or_absent(out) != "absent"
    # the next build collected what the killed ones left (their locks were free), beside the
    # package and in the temporary folder (their scratch folders and captured stdout)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pkg.tmp-")]
    assert [p.name for p in temp.iterdir()] == []


def test_sigterm_stops_a_build_cleanly(cnn_path: Path, tmp_path: Path) -> None:
    """SIGTERM (a timeout, a cancelled CI job) stops a build as Ctrl-C does: exit 143 with a
    line saying so, every worker gone, no package, and no folder left in the temporary folder
    (the build's own, the latency workers', or one a library made inside a killed worker,
    such as ONNX Runtime's quantizer's) or in the cache's scratch space."""
    psutil = pytest.importorskip("psutil")
    temp, cache, out = tmp_path / "tmp", tmp_path / "cache", tmp_path / "pkg"
    temp.mkdir()
    cmd = [sys.executable, "-m", "compiler.cli", str(cnn_path), "--targets", "cpu"]
    cmd += ["-o", str(out), "--cache-dir", str(cache)]
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root, "TMPDIR": str(temp)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    lines = []
    for raw in proc.stderr:  # nodes run in workers once the reference is done
        lines.append(raw.decode(errors="replace"))
        if "ran reference" in lines[-1]:
            break
    time.sleep(1.0)
    workers = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read().decode(errors="replace")
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM, "".join(lines) + rest
    assert "stopped by SIGTERM" in rest
    assert not out.exists()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    assert [p.name for p in temp.iterdir() if p.is_dir()] == []
    assert [p.name for p in temp.iterdir() if p.name.startswith("compile-pkg")] == []
    assert list((cache / "tmp").iterdir()) == []


def test_short_message_folds_and_cuts_library_errors() -> None:
    from compiler.core.errors import BuildError, short_message

    assert (
        short_message(RuntimeError("line one\n   at foo.cc:12\n\n"))
        == "RuntimeError: line one at foo.cc:12"
    )
    assert short_message(BuildError("ours")) == "ours"
    assert short_message(ValueError("x" * 50), limit=10) == "ValueError: " + "x" * 10 + "..."
