"""Executors on real builds of a tiny model: the process pool (the default) builds the package
an in-process build makes, byte for byte; a worker killed mid-node (SIGKILL from the test, a
memory limit a real backend exceeds, a wall-time limit) fails only its node, with the cause,
while the other nodes finish, and the next build on the same cache, with the default
executor, succeeds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from compiler.build import BuildOutcome
from compiler.core.errors import ConfigError
from compiler.core.records import DataOutput
from compiler.pipeline.cache import BUSY, Cache
from compiler.pipeline.config import ExecutorConfig, resolve_config
from compiler.pipeline.executors.inprocess import InProcessExecutor
from compiler.pipeline.executors.processes import ProcessExecutor, usable_cores
from compiler.pipeline.executors.registry import make_executor
from tests.compiler.helpers import build, statuses
from tests.compiler.test_cli import ORT_ONLY, cli
from tests.models import save, tiny_mlp

VICTIM = "arm/ort-fp32:compile"


def _package_bytes(outcome: BuildOutcome) -> dict[str, bytes]:
    """Every artifact and reference file of the package, by relative path."""
    root = outcome.package
    return {
        str(p.relative_to(root)): p.read_bytes()
        for sub in ("artifacts", "reference")
        for p in sorted((root / sub).rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return save(tiny_mlp(), tmp_path / "tiny.onnx")


def test_the_process_pool_builds_the_package_an_in_process_build_makes(
    tmp_path: Path, model: Path
) -> None:
    here = build(model, tmp_path / "a", tmp_path / "ca", executor=InProcessExecutor())
    pool = build(model, tmp_path / "b", tmp_path / "cb", executor=ProcessExecutor(workers=2))
    assert set(statuses(pool).values()) == {"ran"}
    assert statuses(pool) == statuses(here)
    assert list(pool.results) == list(here.results)  # graph order, whatever finished first
    assert pool.manifest.core_sha256 == here.manifest.core_sha256
    assert _package_bytes(pool) == _package_bytes(here)


def test_a_worker_killed_mid_node_fails_only_that_node(tmp_path: Path, model: Path) -> None:
    killed: list[int] = []

    def kill(nid: str, pid: int) -> None:
        if nid != VICTIM:
            return
        deadline = time.monotonic() + 30
        while os.getpgid(pid) != pid and time.monotonic() < deadline:
            time.sleep(0.001)  # the worker leads its own group once it has begun the node
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    cache = tmp_path / "cache"
    first = build(model, tmp_path / "p1", cache, executor=ProcessExecutor(2, on_start=kill))
    assert killed
    victim = first.results[VICTIM]
    assert victim.status == "failed"
    assert f"worker process {killed[0]} killed by SIGKILL" in victim.reason
    below = first.results["arm/ort-fp32:verify"]
    assert below.status == "skipped" and VICTIM in below.reason
    assert first.results["cpu/ort-fp32:verify"].status == "ran"
    built = {a.id: a.status for a in first.manifest.artifacts}
    assert built == {"arm/ort-fp32": "failed", "cpu/ort-fp32": "built"}
    assert not list((cache / "tmp").glob("build-*"))  # the killed node's scratch is gone

    second = build(model, tmp_path / "p2", cache)  # the default executor
    assert second.results[VICTIM].status == "ran"
    assert second.results["cpu/ort-fp32:compile"].status == "cached"
    assert {a.status for a in second.manifest.artifacts} == {"built"}


def test_a_node_over_its_memory_limit_fails_only_that_node(tmp_path: Path, model: Path) -> None:
    # OpenVINO maps its frontend and CPU plugin libraries (several hundred MiB of address
    # space here); ONNX Runtime is loaded before the limit applies and stays far below it
    pytest.importorskip("openvino")
    raw = {
        "targets": {
            "cpu": {
                "variants": {
                    "ort-fp32": {"passes": [], "compile": {"backend": "onnxruntime"}},
                    "ov-f32": {"passes": [], "compile": {"backend": "openvino"}},
                }
            }
        }
    }
    cache = tmp_path / "cache"
    limited = ProcessExecutor(2, memory_mb=150)
    first = build(model, tmp_path / "p1", cache, ("cpu",), raw, executor=limited)
    compiled = first.results["cpu/ov-f32:compile"]
    assert compiled.status == "failed"
    assert "executor.memory_mb=150" in compiled.reason
    assert first.results["cpu/ov-f32:verify"].status == "skipped"
    assert first.results["cpu/ort-fp32:verify"].status == "ran"

    second = build(model, tmp_path / "p2", cache, ("cpu",), raw)  # the default executor
    assert second.results["cpu/ov-f32:compile"].status == "ran"
    assert second.results["cpu/ort-fp32:compile"].status == "cached"
    assert {a.status for a in second.manifest.artifacts} == {"built"}


def test_a_node_past_its_wall_time_is_killed_and_the_build_goes_on(
    tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # verify times blocks until a +-0.01 % interval (never) or 60 s: far past a 6 s limit,
    # which every other node of a tiny model stays well inside
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    latency = {
        "runs": 100000,
        "warmup": 1,
        "max_seconds": 60.0,
        "target_halfwidth": 0.0001,
        "stop_when_slower": False,  # nor once settled as slower than the reference
    }
    outcome = build(
        model,
        tmp_path / "p",
        tmp_path / "cache",
        targets=("cpu",),
        raw={"latency": latency},
        executor=ProcessExecutor(2, wall_s=6.0),
    )
    verify = outcome.results["cpu/ort-fp32:verify"]
    assert verify.status == "failed"
    assert "ran past its wall-time limit (executor.wall_s=6)" in verify.reason
    assert outcome.results["cpu/ort-fp32:compile"].status == "ran"
    # the killed worker's temporary files (its latency feeds) were in its node's scratch;
    # pymp-*: the fork server's socket folder, if it started here (removed when it exits)
    assert [p.name for p in temp.iterdir() if p.is_dir() and p.name[:5] != "pymp-"] == []


def test_the_config_and_its_overrides_pick_the_executor() -> None:
    config = resolve_config(
        {"executor": {"kind": "processes", "workers": 3}}, ["cpu"], ["executor.memory_mb=256"]
    )
    executor = make_executor(config.executor)
    assert isinstance(executor, ProcessExecutor)
    assert (executor.slots, executor.memory_mb) == (3, 256)
    executor.close()
    assert "executor" not in config.model_dump(mode="json")  # not part of what is built
    assert config.digest() == resolve_config({}, ["cpu"]).digest()
    assert ProcessExecutor().slots == usable_cores() == len(os.sched_getaffinity(0))
    with pytest.raises(ConfigError, match="executor.bogus: unknown key 'bogus'"):
        resolve_config({}, ["cpu"], ["executor.bogus=1"])


PID_LOADER = """
import os
from pathlib import Path

import numpy as np

def feeds():
    with open(Path(__file__).with_name("calls.txt"), "a") as f:
        f.write(f"{os.getpid()}\\n")
    return [{"x": np.full((1, 8), i, np.float32)} for i in range(6)]
"""


def test_the_default_executor_is_the_process_pool(tmp_path: Path, model: Path) -> None:
    assert ExecutorConfig().kind == "processes"
    executor = make_executor(resolve_config({}, ["cpu"]).executor)
    assert isinstance(executor, ProcessExecutor) and executor.slots == usable_cores()
    executor.close()
    # kinds hold no state, as key and run may be in different processes: the data node's
    # key runs the user's loader in the build's process (its data's digest) and leaves the
    # data in the build's scratch, where the node's worker reads it (the loader runs once)
    (tmp_path / "pid_loader.py").write_text(PID_LOADER)
    raw = {"data": {"loader": f"{tmp_path / 'pid_loader.py'}:feeds"}}
    outcome = build(model, tmp_path / "p", tmp_path / "cache", ("cpu",), raw)
    assert {r.status for r in outcome.results.values()} == {"ran"}
    calls = [int(pid) for pid in (tmp_path / "calls.txt").read_text().split()]
    assert calls == [os.getpid()]
    data = outcome.results["data"].expect(DataOutput)
    assert (data.samples_source, data.split_from) == ("user", 6)


SCRIPT = """
from pathlib import Path
import sys

with open(Path(sys.argv[1]) / "imports.txt", "a") as f:
    f.write(__name__ + "\\n")

if __name__ == "__main__":
    from compiler.pipeline.executors.processes import ProcessExecutor
    from tests.compiler.helpers import build

    out = Path(sys.argv[1])
    outcome = build(Path(sys.argv[2]), out / "p", out / "c", executor=ProcessExecutor(2))
    print(len(outcome.results))
"""


def test_a_build_from_a_script_imports_the_script_once_more_not_once_per_node(
    tmp_path: Path, model: Path
) -> None:
    # a worker that lacks the main script imports it again (CPython's fork server does not
    # preload it): once in the fork server, not in each node's worker
    (tmp_path / "script.py").write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    argv = [sys.executable, str(tmp_path / "script.py"), str(tmp_path), str(model)]
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.split()[-1]) == 8  # nodes run in workers
    assert (tmp_path / "imports.txt").read_text().split() == ["__main__", "__mp_main__"]


def test_the_cli_runs_a_build_on_the_process_pool(tmp_path: Path, model: Path) -> None:
    args = [str(model), "--config", ORT_ONLY, "--targets", "cpu", "--set", "latency.runs=5"]
    pool = cli(
        *args, "-o", str(tmp_path / "p"), "--executor", "processes", "--jobs", "2", "--json",
        cache=tmp_path / "cp",
    )  # fmt: skip
    here = cli(
        *args, "-o", str(tmp_path / "i"), "--executor", "in-process", "--json",
        cache=tmp_path / "ci",
    )  # fmt: skip
    assert pool.returncode == here.returncode == 0, pool.stderr + here.stderr
    docs = [json.loads(r.stdout) for r in (pool, here)]
    assert docs[0]["nodes"] == docs[1]["nodes"] == {"ran": 6}
    assert docs[0]["core_sha256"] == docs[1]["core_sha256"]
    bad = cli(*args, "-o", str(tmp_path / "x"), "--executor", "threads", cache=tmp_path / "cx")
    assert bad.returncode == 2 and "'threads' is not one of" in bad.stderr
    alone = cli(
        *args, "-o", str(tmp_path / "y"), "--executor", "in-process", "--jobs", "2",
        cache=tmp_path / "cy",
    )  # fmt: skip
    assert alone.returncode == 2 and "--jobs 2: only the processes executor" in alone.stderr


def test_a_key_another_build_holds_is_busy_to_a_build_that_must_not_wait(tmp_path: Path) -> None:
    a, b = Cache(tmp_path / "c"), Cache(tmp_path / "c")
    key = "cd" + "0" * 62
    assert a.get(key) is None  # a builds it
    assert b.get(key, block=False) is BUSY  # b runs other nodes meanwhile
    scratch = a.new_entry(key)
    (scratch / "out/file.txt").write_text("made once")
    a.commit(key, scratch, {"status": "ran"})
    hit = b.get(key, block=False)
    assert isinstance(hit, tuple) and (hit[0] / "file.txt").read_text() == "made once"
    a.close()
    b.close()


def test_concurrent_pool_builds_sharing_a_cache_both_finish(tmp_path: Path, model: Path) -> None:
    # each holds the keys of the nodes it runs; neither may wait for one while holding others
    outcomes: dict[int, BuildOutcome] = {}

    def run(i: int) -> None:
        outcomes[i] = build(
            model, tmp_path / f"p{i}", tmp_path / "cache", executor=ProcessExecutor(2)
        )

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(outcomes) == [0, 1]
    assert outcomes[0].manifest.core_sha256 == outcomes[1].manifest.core_sha256
    assert _package_bytes(outcomes[0]) == _package_bytes(outcomes[1])


def _descendants(pid: int) -> dict[int, str]:
    """Live descendants of `pid` (pid -> command line)."""
    found = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            found[child.pid] = " ".join(child.cmdline())
        except psutil.Error:  # gone meanwhile
            continue
    return found


def test_a_build_killed_outright_leaves_no_worker_running(tmp_path: Path, model: Path) -> None:
    slow = ["latency.runs=100000", "latency.max_seconds=60", "latency.target_halfwidth=0.0001"]
    argv = [sys.executable, "-m", "compiler.cli", "build", str(model), "--config", ORT_ONLY]
    argv += ["--targets", "cpu", "-o", str(tmp_path / "p"), "--cache-dir", str(tmp_path / "c")]
    argv += ["-q", *(a for kv in slow for a in ("--set", kv))]  # the default: processes
    build_process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: dict[int, str] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any("latency_worker" in c for c in seen.values()):
        seen.update(_descendants(build_process.pid))  # until verify's timing workers run
        time.sleep(0.05)
    build_process.kill()
    build_process.wait()
    assert any("latency_worker" in c for c in seen.values()), seen
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in seen):
        time.sleep(0.1)
    left = {p: c for p, c in seen.items() if psutil.pid_exists(p)}
    left = {p: c for p, c in left.items() if psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
    assert not left, left
