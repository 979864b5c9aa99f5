"""A cache shared through fsspec (issue 16, item 2): builds with local caches of their own that
share one remote reuse each other's entries; a remote entry that fails its digests, or has no
seal yet, is refused and built again, and the rebuild repairs it. The remote is fsspec's real
local filesystem through a `file://` URL on another folder (what an s3:// bucket gets, minus
the network)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from compiler.core.hashing import file_sha256
from compiler.core.host import probe_host
from compiler.core.records import NodeResult
from compiler.pipeline.cache import Cache
from compiler.pipeline.config import resolve_config
from compiler.pipeline.graph import build_graph
from compiler.pipeline.nodes.context import BuildInputs, NodeContext
from compiler.pipeline.nodes.registry import KINDS
from compiler.pipeline.remote_cache import RemoteCache, is_url, open_cache
from compiler.pipeline.scheduler import Scheduler
from tests.compiler.helpers import ORT_ONLY

pytest.importorskip("fsspec")

RAW = {"latency": {"runs": 1, "warmup": 0, "max_seconds": 0.2}, "targets": ORT_ONLY}


def _build(model: Path, cache: Cache) -> dict[str, NodeResult]:
    """The build graph of `model` for cpu, run on `cache` (what build_package runs)."""
    cfg = resolve_config(RAW, ["cpu"])
    inputs = BuildInputs(model, file_sha256(model), cfg, ("cpu",))
    try:
        ctx = NodeContext(inputs, build_graph(cfg, ("cpu",)), probe_host())
        return dict(Scheduler(KINDS, cache).run(ctx))
    finally:
        cache.close()


def _compile_entry(remote: Path) -> Path:
    (entry,) = [
        p.parent.parent
        for p in remote.glob("??/*/out/model.onnx")
        if '"kind": "compile"' in (p.parent.parent / "node.json").read_text()
    ]
    return entry


def test_a_url_opens_a_mirrored_cache_and_a_folder_a_local_one(tmp_path: Path) -> None:
    assert is_url("s3://bucket/prefix") and not is_url(tmp_path)
    assert type(open_cache(tmp_path / "c")) is Cache
    remote = open_cache(f"file://{tmp_path / 'r'}", tmp_path / "mirror")
    assert isinstance(remote, RemoteCache) and remote.root == tmp_path / "mirror"


def test_builds_with_their_own_caches_share_entries_through_a_remote(
    mlp_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    remote = tmp_path / "remote"
    url = f"file://{remote}"
    first = _build(mlp_path, open_cache(url, tmp_path / "local-a"))
    assert {r.status for r in first.values()} == {"ran"}
    assert len(list(remote.glob("??/*/entry.json"))) == len(first)  # every entry went up

    second = _build(mlp_path, open_cache(url, tmp_path / "local-b"))
    assert {r.status for r in second.values()} == {"cached"}  # from the remote, verified
    assert {n: r.digest for n, r in second.items()} == {n: r.digest for n, r in first.items()}
    assert len(list((tmp_path / "local-b").glob("??/*/entry.json"))) == len(first)

    entry = _compile_entry(remote)
    (entry / "out/model.onnx").write_bytes(b"not the model that was sealed")
    with caplog.at_level(logging.WARNING, "compile_pkg.cache"):
        third = _build(mlp_path, open_cache(url, tmp_path / "local-c"))
    assert "files that differ from their recorded sha256" in caplog.text
    assert "refused, building it again" in caplog.text
    compiled = [n for n in third if n.endswith(":compile")]
    assert [third[n].status for n in compiled] == ["ran"]
    assert all(r.status == "cached" for n, r in third.items() if n not in compiled)
    assert third[compiled[0]].digest == first[compiled[0]].digest

    fourth = _build(mlp_path, open_cache(url, tmp_path / "local-d"))
    assert {r.status for r in fourth.values()} == {"cached"}  # the rebuild repaired the remote


def test_a_remote_entry_without_its_seal_is_no_entry(mlp_path: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    url = f"file://{remote}"
    _build(mlp_path, open_cache(url, tmp_path / "local-a"))
    entry = _compile_entry(remote)
    (entry / "entry.json").unlink()  # an upload cut short before its seal went up
    (entry / "out/stray.bin").write_bytes(b"left by the cut-short upload")
    again = _build(mlp_path, open_cache(url, tmp_path / "local-b"))
    compiled = [n for n in again if n.endswith(":compile")]
    assert [again[n].status for n in compiled] == ["ran"]
    assert (entry / "entry.json").is_file() and not (entry / "out/stray.bin").exists()
