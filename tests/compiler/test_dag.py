from __future__ import annotations

from pathlib import Path

import networkx as nx

from compiler.pipeline.config import resolve_config
from compiler.pipeline.dag import build_graph, describe_graph
from tests.compiler.helpers import ORT_ONLY, build, statuses


def _two_variant_raw() -> dict:
    fuse = [{"name": "fuse", "level": "basic"}]
    return {
        "targets": {
            **ORT_ONLY,
            "cpu": {
                "variants": {
                    "a": {"passes": fuse, "compile": {"backend": "onnxruntime"}},
                    "b": {
                        "passes": fuse,
                        "compile": {"backend": "onnxruntime", "graph_optimization_level": "basic"},
                    },
                }
            },
        }
    }


def test_identical_pass_prefixes_are_one_node() -> None:
    cfg = resolve_config(_two_variant_raw(), ["cpu", "arm"])
    g = build_graph(cfg, ("cpu", "arm"))
    fuse_nodes = [n for n in g if g.nodes[n]["kind"] == "pass"]
    assert len(fuse_nodes) == 1  # cpu/a, cpu/b and arm/ort-fp32 share it
    assert sorted(g.successors(fuse_nodes[0])) == [
        "arm/ort-fp32:compile",
        "cpu/a:compile",
        "cpu/b:compile",
    ]
    assert nx.is_directed_acyclic_graph(g)
    text = "\n".join(describe_graph(g))
    assert "cpu/a:verify [verify]" in text and "<- normalize" in text


def test_second_build_is_all_cache_hits_and_identical(
    mlp_path: Path, tmp_path: Path, cache_dir: Path
) -> None:
    first = build(mlp_path, tmp_path / "p1", cache_dir)
    assert set(statuses(first).values()) == {"ran"}
    second = build(mlp_path, tmp_path / "p2", cache_dir)
    assert set(statuses(second).values()) == {"cached"}
    assert first.manifest.core_sha256 == second.manifest.core_sha256


def test_changing_one_parameter_reruns_only_dependents(
    mlp_path: Path, tmp_path: Path, cache_dir: Path
) -> None:
    build(mlp_path, tmp_path / "p1", cache_dir, raw=_two_variant_raw(), targets=("cpu",))
    changed = build(
        mlp_path,
        tmp_path / "p2",
        cache_dir,
        raw=_two_variant_raw(),
        targets=("cpu",),
        overrides=["cpu.b.compile.graph_optimization_level=extended"],
    )
    s = statuses(changed)
    assert s["cpu/b:compile"] == "ran" and s["cpu/b:verify"] == "ran"
    assert all(st == "cached" for n, st in s.items() if not n.startswith("cpu/b:"))


def test_changing_a_pass_reruns_its_branch(mlp_path: Path, tmp_path: Path, cache_dir: Path) -> None:
    build(mlp_path, tmp_path / "p1", cache_dir, targets=("cpu", "arm"))
    changed = build(
        mlp_path,
        tmp_path / "p2",
        cache_dir,
        targets=("cpu", "arm"),
        overrides=["cpu.fuse.level=extended"],
    )
    s = statuses(changed)
    ran = sorted(n for n, st in s.items() if st == "ran")
    assert any(n.startswith("fuse#") for n in ran)
    assert "cpu/ort-fp32:compile" in ran and "arm/ort-fp32:compile" not in ran
    assert s["normalize"] == s["reference"] == "cached"


def test_unavailable_target_is_skipped_with_reason(mlp_path: Path, tmp_path: Path) -> None:
    raw = {"targets": {"gpu": {"variants": {"ort": {"compile": {"backend": "onnxruntime"}}}}}}
    out = build(mlp_path, tmp_path / "p", None, targets=("gpu", "cpu"), raw=raw)
    gpu = out.manifest.artifact("gpu/ort")
    assert gpu.status == "skipped" and "no onnxruntime artifact for target 'gpu'" in gpu.reason
    assert out.manifest.artifact("cpu/ort-fp32").status == "built"


def test_no_cache_leaves_no_cache_entries(mlp_path: Path, tmp_path: Path, cache_dir: Path) -> None:
    build(mlp_path, tmp_path / "p", None)
    assert not cache_dir.exists()
