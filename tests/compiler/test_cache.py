"""The node cache as builds share it (issue 13, item 4): entries are verified on read, each build
has its own scratch, per-entry locks let concurrent builds share one cache, and `prune` keeps
it within a size, least recently used out first."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from compiler.core.errors import CompilePkgError
from compiler.pipeline.cache import Cache
from tests.compiler.helpers import build
from tests.models import save, tiny_cnn, tiny_mlp

PAIRS = 12
QUICK = {"latency": {"runs": 1, "warmup": 0, "max_seconds": 0.2}}


def _artifact_files(pkg: Path) -> dict[str, bytes]:
    return {
        p.relative_to(pkg).as_posix(): p.read_bytes()
        for sub in ("artifacts", "reference")
        for p in sorted((pkg / sub).rglob("*"))
        if p.is_file()
    }


def _compile_entry(cache: Path) -> Path:
    """The cache entry holding the cpu artifact's compiled model."""
    entries = [p.parent.parent for p in cache.glob("??/*/out/model.onnx")]
    compiled = [e for e in entries if '"kind": "compile"' in (e / "node.json").read_text()]
    assert len(compiled) == 1, compiled
    return compiled[0]


def test_a_tampered_entry_is_evicted_and_rebuilt(
    mlp_path: Path, tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = build(mlp_path, tmp_path / "a", cache_dir, targets=("cpu",), raw=QUICK)
    entry = _compile_entry(cache_dir)
    other = save(tiny_cnn(), tmp_path / "other.onnx")  # a valid model, not this one
    (entry / "out/model.onnx").write_bytes(other.read_bytes())
    with caplog.at_level(logging.WARNING, "compile_pkg.cache"):
        second = build(mlp_path, tmp_path / "b", cache_dir, targets=("cpu",), raw=QUICK)
    assert (
        "files that differ from their recorded sha256" in caplog.text and "evicted" in caplog.text
    )
    compile_ = next(r for n, r in second.results.items() if n.endswith(":compile"))
    assert compile_.status == "ran"  # built again, not served from the bad entry
    assert _artifact_files(tmp_path / "a") == _artifact_files(tmp_path / "b")
    assert first.manifest.core_sha256 == second.manifest.core_sha256
    third = build(mlp_path, tmp_path / "c", cache_dir, targets=("cpu",), raw=QUICK)
    assert all(r.status == "cached" for r in third.results.values())  # the rebuilt entry holds


def _build_into(model: str, out: str, cache: str) -> None:
    build(Path(model), Path(out), Path(cache), targets=("cpu",), raw=QUICK)


def test_concurrent_builds_sharing_one_cache_all_succeed_identically(tmp_path: Path) -> None:
    model = save(tiny_mlp(), tmp_path / "mlp.onnx")
    # children forked from a clean server process (no runtime sessions inherited)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.compiler.helpers"])
    crashes, pkgs = 0, []
    for i in range(PAIRS):
        cache = tmp_path / f"cache{i % 4}"  # four fresh caches, then each warm twice
        pair = [tmp_path / f"pkg{i}-{j}" for j in range(2)]
        procs = [
            ctx.Process(target=_build_into, args=(str(model), str(p), str(cache))) for p in pair
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=300)
        crashes += sum(p.exitcode != 0 for p in procs)
        pkgs += pair
    print(f"concurrent build pairs: {PAIRS}, builds crashed: {crashes}")
    assert crashes == 0
    reference = _artifact_files(pkgs[0])
    assert all(_artifact_files(p) == reference for p in pkgs[1:])
    for i in range(4):  # each build cleaned its own scratch only, and none is left behind
        assert not list((tmp_path / f"cache{i}" / "tmp").iterdir())


def test_a_second_build_waits_for_the_first_one_s_entry(tmp_path: Path) -> None:
    a, b = Cache(tmp_path / "c"), Cache(tmp_path / "c")
    key = "ab" + "0" * 62
    assert a.get(key) is None  # a builds it, holding the key's lock
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(b.get(key)))
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive() and not got  # b waits for a's result instead of building it too
    scratch = a.new_entry(key)
    (scratch / "out/file.txt").write_text("made once")
    a.commit(key, scratch, {"status": "ran"})
    waiter.join(timeout=10)
    hit = got[0]
    assert isinstance(hit, tuple) and (hit[0] / "file.txt").read_text() == "made once"
    a.close()
    b.close()


def test_each_build_removes_only_its_own_scratch(tmp_path: Path) -> None:
    root = tmp_path / "c"
    live = Cache(root)
    live_scratch = live.new_entry()
    killed = root / "tmp" / "build-killed"  # left by a killed build: nobody holds its lock
    (killed / "node-x" / "out").mkdir(parents=True)
    other = Cache(root)
    other.new_entry()  # opening collects the killed build's scratch, not the live one's
    assert not killed.exists() and live_scratch.is_dir()
    other.close()
    assert live_scratch.is_dir()
    live.close()
    assert not live_scratch.exists()


def test_prune_removes_least_recently_used_entries_first(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    keys = [f"{i:02x}" + "0" * 62 for i in range(4)]
    for i, key in enumerate(keys):
        assert cache.get(key) is None
        scratch = cache.new_entry(key)
        (scratch / "out/blob").write_bytes(b"x" * 10_000)
        cache.commit(key, scratch, {"i": i})
        os.utime(cache.root / key[:2] / key, (1000 + i, 1000 + i))
    assert cache.get(keys[0]) is not None  # used now: the most recent
    cache.close()
    size = sum(s for _, _, s in cache.entries())
    report = Cache(tmp_path / "c").prune(size // 2)
    assert report.removed == 2 and report.kept == 2
    left = {e.name for e, _, _ in cache.entries()}
    assert left == {keys[0], keys[3]}


def test_prune_waits_for_running_builds(tmp_path: Path) -> None:
    running = Cache(tmp_path / "c")
    running.new_entry()  # a build holds the cache's shared lock while it runs
    with pytest.raises(CompilePkgError, match="in use by a running build"):
        Cache(tmp_path / "c").prune(0)
    running.close()
    assert Cache(tmp_path / "c").prune(0).removed == 0
