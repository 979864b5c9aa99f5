"""Ray and portfolios: `build-many` builds one package per model; every entry is checked before
any work; `--strict` and a model that cannot build exit non-zero. On a real Ray cluster on
loopback (a head and one more node process, resources labelled) a three-model portfolio builds
while one Ray worker is SIGKILLed mid-node: its task runs again, and each package is byte for
byte the package an in-process build makes. A node that needs a resource no Ray node offers
fails at once with the reason; a missing `ray` is a one-line install hint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import jsonschema
import numpy as np
import psutil
import pytest
import yaml

from compiler.build import BuildOutcome, build_package
from compiler.cli.schema import schema_of
from compiler.core.errors import ConfigError
from compiler.core.hashing import file_sha256
from compiler.pipeline.config import ExecutorConfig, load_config, resolve_config
from compiler.pipeline.executors.inprocess import InProcessExecutor
from compiler.pipeline.executors.ray_executor import RayExecutor, node_resources
from compiler.pipeline.graph import build_graph
from compiler.pipeline.normalize import Source
from compiler.portfolio import executor_from_flag, load_portfolio
from tests.models import save, tiny_mlp

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny_cnn.onnx"
ORT = """\
latency: {runs: 5, warmup: 1}
targets:
  cpu:
    pipeline: none
    variants:
      ort-fp32: {passes: [{name: fuse, level: basic}], compile: {backend: onnxruntime}}
      ort-plain: {passes: [], compile: {backend: onnxruntime}}
"""
INT8 = """\
latency: {runs: 3, warmup: 1}
targets:
  cpu:
    pipeline: none
    variants:
      ort-int8: {passes: [{name: quantize, mode: static}], compile: {backend: onnxruntime}}
parity:
  tolerances:
    int8: {atol: 0, rtol: 0, min_cosine: 1.0, min_top1: 1.0}
"""
LABEL = "compile_pkg_test_worker"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compiler.cli", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _files(package: Path) -> dict[str, str]:
    """sha256 of every artifact and reference file, by relative path."""
    return {
        str(p.relative_to(package)): file_sha256(p)
        for sub in ("artifacts", "reference")
        for p in sorted((package / sub).rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------ config, flags, placement


def test_a_missing_ray_is_a_one_line_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError) as err:
        RayExecutor(ExecutorConfig(kind="ray"))
    assert "pip install 'compile-pkg[ray]'" in str(err.value)
    assert "\n" not in str(err.value)


def test_executor_config_and_flag() -> None:
    cfg = resolve_config({"executor": {"kind": "ray", "address": "ray://10.0.0.1:10001"}}, ["cpu"])
    assert (cfg.executor.kind, cfg.executor.address) == ("ray", "ray://10.0.0.1:10001")
    with pytest.raises(ConfigError, match="executor.kind"):
        resolve_config({"executor": {"kind": "dask"}}, ["cpu"])
    base = ExecutorConfig(address="head:6379")
    assert executor_from_flag("ray", base).model_dump(include={"kind", "address"}) == {
        "kind": "ray",
        "address": "head:6379",  # the portfolio's cluster
    }
    client = executor_from_flag("ray://head:10001", base)
    assert (client.kind, client.address) == ("ray", "ray://head:10001")
    assert executor_from_flag("in-process", base).kind == "in-process"
    with pytest.raises(ConfigError, match="--executor dask: choose"):
        executor_from_flag("dask", base)
    bad = ExecutorConfig(kind="ray", resources={"compile": {"GPU": 0}})
    with pytest.raises(ConfigError, match="executor.resources.compile: amounts must be positive"):
        RayExecutor(bad)  # refused before any connection


def test_resource_labels_by_node_id_kind_and_target() -> None:
    g = build_graph(resolve_config({}, ["gpu", "cpu", "arm"]), ("gpu", "cpu", "arm"))
    resources = {
        "compile:gpu": {"compile_pkg_gpu_cc_9_0": 1.0, "GPU": 1.0},
        "verify:arm": {"aarch64": 1.0},
        "reference": {"big": 2.0},
    }
    cfg = ExecutorConfig(kind="ray", resources=resources)
    by_id = {n.id: node_resources(n, cfg, 1000 << 20) for n in g}
    gpu = [n.id for n in g if n.kind == "compile" and n.id.startswith("gpu/")]
    arm = [n.id for n in g if n.kind == "verify" and n.id.startswith("arm/")]
    assert gpu and arm
    for nid in gpu:
        assert by_id[nid]["compile_pkg_gpu_cc_9_0"] == 1.0 and by_id[nid]["GPU"] == 1.0
    for nid in arm:
        assert by_id[nid]["aarch64"] == 1.0
    assert by_id[g.reference.id]["big"] == 2.0
    assert set(by_id[g.normalize.id]) == {"CPU", "memory"}
    assert by_id[g.normalize.id]["memory"] == 6 * (1000 << 20)  # scaled from the model
    small = node_resources(g.normalize, cfg, 1 << 20)["memory"]
    assert small == 256 << 20  # the floor
    limited = ExecutorConfig(kind="ray", memory_mb=512)
    assert node_resources(g.normalize, limited, 1000 << 20)["memory"] == 512 << 20
    exact = ExecutorConfig(kind="ray", resources={gpu[0]: {"x": 1.0}, "compile": {"y": 1.0}})
    assert "x" in node_resources(g.node(gpu[0]), exact, 0)  # the node id first
    assert "y" in node_resources(g.node(gpu[-1]), exact, 0) or len(gpu) == 1


# ------------------------------------------------------------------ portfolio files and exits


def _tiny_models(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [save(tiny_mlp(seed=i), folder / f"m{i}.onnx") for i in range(count)]


def test_every_entry_is_checked_before_any_work(tmp_path: Path) -> None:
    _tiny_models(tmp_path, 2)
    (tmp_path / "ort.yaml").write_text(ORT)
    (tmp_path / "typo.yaml").write_text("targets: {cpu: {pipelin: none}}\n")
    pf = tmp_path / "pf.yaml"
    pf.write_text(
        "models:\n"
        "  - {model: m0.onnx, config: ort.yaml}\n"  # fine
        "  - {model: missing.onnx}\n"
        "  - {model: m1.onnx, name: bad, config: typo.yaml}\n"
        "  - {model: m1.onnx, name: m0, config: ort.yaml}\n"  # m0 again
        "  - {model: m1.onnx, name: data, sample_data: nowhere/}\n"
    )
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        load_portfolio(pf, out)
    lines = str(err.value).splitlines()
    assert len(lines) == 4, lines
    assert lines[0].startswith(f"{pf}: models[1] (missing.onnx): model ")
    assert "no such file" in lines[0]
    assert lines[1].startswith(f"{pf}: models[2] (bad): ") and "pipelin" in lines[1]
    assert lines[2].startswith(f"{pf}: models[3] (m0): the package name is also models[0]'s")
    assert lines[3].startswith(f"{pf}: models[4] (data): --sample-data ")
    assert not out.exists()

    pf.write_text("models:\n  - {model: m0.onnx, targets: [cpu], colour: blue}\n")
    with pytest.raises(ConfigError, match=r"models\[0\] \(m0.onnx\).colour: Extra inputs"):
        load_portfolio(pf, out)
    pf.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_portfolio(pf, out)
    r = cli("build-many", str(tmp_path / "none.yaml"), "-o", str(out))
    assert r.returncode == 2 and "cannot read the portfolio" in r.stderr
    assert "Traceback" not in r.stderr


def test_strict_and_a_model_that_cannot_build_exit_non_zero(tmp_path: Path) -> None:
    (tmp_path / "ort.yaml").write_text(ORT)
    (tmp_path / "int8.yaml").write_text(INT8)
    rng = np.random.default_rng(0)
    for split, count, name in (("calib", 8, "input"), ("samples", 4, "input"), ("wrong", 2, "x")):
        (tmp_path / split).mkdir()
        for i in range(count):
            np.savez(tmp_path / split / f"{i}.npz", **{name: rng.random((1, 3, 32, 32), "f4")})
    shutil.copy(EXAMPLE, tmp_path / "cnn.onnx")
    data = "sample_data: samples, calibration_data: calib"
    (tmp_path / "strict.yaml").write_text(
        "executor: {kind: in-process}\nmodels:\n"
        "  - {model: cnn.onnx, name: good, config: ort.yaml, targets: [cpu]}\n"
        f"  - {{model: cnn.onnx, name: lossy, config: int8.yaml, targets: [cpu], {data}}}\n"
    )
    cache = str(tmp_path / "cache")
    common = ["-o", str(tmp_path / "out"), "--cache-dir", cache, "--json"]
    lenient = cli("build-many", str(tmp_path / "strict.yaml"), *common)
    assert lenient.returncode == 0, lenient.stderr
    # the reports' charts keep matplotlib's font cache in the given cache folder, as `build`
    assert (tmp_path / "cache" / "matplotlib").is_dir()
    doc = json.loads(lenient.stdout)
    jsonschema.validate(doc, schema_of("build-many"))
    assert [(m["name"], m["status"]) for m in doc["models"]] == [
        ("good", "built"),
        ("lossy", "built"),
    ]
    good = doc["models"][0]
    assert [p["target"] for p in good["picks"]] == ["cpu"]
    assert good["picks"][0]["artifact"] in ("cpu/ort-fp32", "cpu/ort-plain", "reference")
    assert good["picks"][0]["speedup_low"] is not None  # measured, with its interval

    strict = cli("build-many", str(tmp_path / "strict.yaml"), *common, "--strict")
    assert strict.returncode == 1, strict.stderr
    doc = json.loads(strict.stdout)
    assert doc["ok"] is False and list(doc["strict_failures"]) == ["lossy"]
    assert "cpu/ort-int8 failed: parity failed" in doc["strict_failures"]["lossy"][0]

    (tmp_path / "broken.yaml").write_text(
        "executor: {kind: in-process}\nmodels:\n"
        "  - {model: cnn.onnx, name: good, config: ort.yaml, targets: [cpu]}\n"
        "  - {model: cnn.onnx, name: nodata, config: ort.yaml, targets: [cpu], "
        "sample_data: wrong}\n"
    )
    broken = cli("build-many", str(tmp_path / "broken.yaml"), *common[:-1])
    assert broken.returncode != 0
    assert "1 of 2 model(s) not built: ['nodata']" in broken.stderr
    assert "good" in broken.stdout and "failed: " in broken.stdout  # the table shows both
    assert (tmp_path / "out" / "good" / "manifest.json").is_file()
    assert not (tmp_path / "out" / "nodata").exists()


def test_a_node_no_ray_node_can_run_fails_at_once(tmp_path: Path) -> None:
    """On a local Ray instance (one CPU): a node labelled with a resource no Ray node offers
    is failed with the reason instead of waiting for one; the rest of the build goes on."""
    pytest.importorskip("ray")
    model = _tiny_models(tmp_path, 1)[0]
    raw = yaml.safe_load(ORT)
    needs = {"cpu/ort-plain:compile": {"compile_pkg_gpu_cc_9_0": 1}}
    raw["executor"] = {"kind": "ray", "workers": 1, "resources": needs}
    (tmp_path / "ray.yaml").write_text(yaml.safe_dump(raw))
    args = [str(model), "--config", str(tmp_path / "ray.yaml"), "--targets", "cpu", "--json"]
    args += ["-o", str(tmp_path / "pkg"), "--cache-dir", str(tmp_path / "c")]
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths
    try:
        r = subprocess.run(
            [*_loopback_only(), sys.executable, "-m", "compiler.cli", "build", *args],
            # `local`: a new Ray instance of the build's own, whatever else runs on this machine
            env={**_ray_env(), "RAY_ADDRESS": "local", "RAY_TMPDIR": temp},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stderr.splitlines() if "failed cpu/ort-plain:compile" in x)
    assert "needs Ray compile_pkg_gpu_cc_9_0=1, which no alive node of the local cluster " in line
    assert "ray start --address=HEAD:PORT --resources='{\"compile_pkg_gpu_cc_9_0\": 1}'" in line
    assert "skipped cpu/ort-plain:verify" in r.stderr
    rows = {a["id"]: a["status"] for a in json.loads(r.stdout)["artifacts"]}
    assert rows == {"cpu/ort-fp32": "built", "cpu/ort-plain": "failed"}


# ------------------------------------------------------------------ a real cluster on loopback

# Ray turns 127.0.0.1 into this machine's address on its network interface; in a network
# namespace of its own that has only loopback, every connection stays on 127.0.0.1
_LOOPBACK = 'ip link set lo up && exec "$@"'
# the head (one CPU) and one more node process (one CPU, labelled), the build, and `ray stop
# --force` whatever happens, all in one namespace
_CLUSTER = f"""\
set -e
ray() {{ "$PY" -m ray.scripts.scripts "$@"; }}
trap 'ray stop --force >/dev/null 2>&1 || true' EXIT
small="--object-store-memory=80000000 --disable-usage-stats --node-ip-address=127.0.0.1"
ray start --head --port=6379 --num-cpus=1 --include-dashboard=false --temp-dir="$RAY_TMP" \\
  --resources='{{"compile_pkg_test_head": 1}}' $small >&2
ray start --address=127.0.0.1:6379 --num-cpus=1 --resources='{{"{LABEL}": 1}}' $small >&2
"$PY" -m compiler.cli "$@"
"""


def _loopback_only() -> list[str]:
    """The command prefix that runs a command in a new network namespace with only loopback
    (root and `unshare`, as on CI); skips the test where this host cannot make one."""
    prefix = ["unshare", "--net", "sh", "-c", _LOOPBACK, "sh"]
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        pytest.skip("needs a network namespace (unshare --net, as root) to keep Ray on loopback")
    return prefix


def _ray_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PY": sys.executable,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
    }


def _kill_one_running(title: str, stop: threading.Event, killed: list[str]) -> None:
    """SIGKILL the first Ray worker seen running a task whose process title holds `title`
    (Ray titles a worker `ray::TASK NAME` while it runs that task)."""
    while not stop.is_set() and not killed:
        for p in psutil.process_iter(["pid", "cmdline"]):
            line = " ".join(p.info["cmdline"] or [])
            if line.startswith("ray::compile-pkg") and title in line:
                os.kill(p.info["pid"], signal.SIGKILL)
                killed.append(line.strip())
                return
        time.sleep(0.02)


@pytest.mark.slow
def test_a_portfolio_on_a_ray_cluster_survives_a_killed_worker(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    prefix = _loopback_only()
    models = _tiny_models(tmp_path / "models", 2)
    (tmp_path / "ort.yaml").write_text(ORT)
    pf = tmp_path / "pf.yaml"
    pf.write_text(
        "executor: {kind: processes, address: '127.0.0.1:6379', retries: 2,"
        f" resources: {{verify: {{{LABEL}: 1}}}}}}\nmodels:\n"
        + "".join(f"  - {{model: models/{m.name}, config: ort.yaml, targets: [cpu]}}\n" for m in models)
    )  # fmt: skip
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths
    env = {**_ray_env(), "RAY_TMP": str(temp)}
    args = ["build-many", str(pf), "--executor", "ray", "-o", str(tmp_path / "out")]
    args += ["--cache-dir", str(tmp_path / "cache"), "--json"]
    stop, killed = threading.Event(), []  # type: ignore[var-annotated]
    watcher = threading.Thread(target=_kill_one_running, args=(":verify", stop, killed))
    watcher.start()
    try:
        r = subprocess.run(
            [*prefix, "sh", "-c", _CLUSTER, "sh", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        stop.set()
        watcher.join()
        # the script stops its cluster itself; this is for a script that timed out
        stop_all = [sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"]
        subprocess.run(stop_all, env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
    assert r.returncode == 0, r.stderr
    assert killed, "no Ray worker was seen running a verify node"
    doc = json.loads(r.stdout)
    assert doc["executor"] == "ray at 127.0.0.1:6379"
    assert [m["status"] for m in doc["models"]] == ["built"] * 2
    for m in doc["models"]:
        assert m["nodes"] == {"ran": 8}, m  # the killed node too: its task ran again

    config = load_config(tmp_path / "ort.yaml", ["cpu"])
    for model, summary in zip(models, doc["models"], strict=True):
        here: BuildOutcome = build_package(
            Source(onnx_path=model),
            config,
            ("cpu",),
            tmp_path / "here" / model.stem,
            cache_dir=tmp_path / "cache-here",
            executor=InProcessExecutor(),
        )
        package = Path(summary["package"])
        assert summary["core_sha256"] == here.manifest.core_sha256
        assert _files(package) == _files(here.package)
        assert len(_files(package)) >= 3
