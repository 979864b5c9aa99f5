"""The build graph and its run: interned pass prefixes, artifacts that name their nodes,
content-keyed caching, in-memory model handoff between passes, failures and skips per branch."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest

from compiler.core.host import probe_host
from compiler.core.records import Availability, NodeResult, NormalizeOutput, NormalizeRecord
from compiler.pipeline.config import resolve_config
from compiler.pipeline.executors.inprocess import InProcessExecutor
from compiler.pipeline.graph import BuildGraph, CompileNode, PassNode, build_graph, describe_graph
from compiler.pipeline.interface import extract_contract
from compiler.pipeline.nodes.context import BuildInputs, NodeContext
from compiler.pipeline.nodes.passes import PassKind
from targets.onnxruntime.backend import OnnxRuntimeBackend
from tests.compiler.helpers import ORT_ONLY, build, statuses
from tests.models import tiny_mlp


def _two_variant_raw(second_pass: str = "basic") -> dict:
    fuse = [{"name": "fuse", "level": "basic"}]
    return {
        "targets": {
            **ORT_ONLY,
            "cpu": {
                "pipeline": "none",
                "variants": {
                    "a": {"passes": fuse, "compile": {"backend": "onnxruntime"}},
                    "b": {
                        "passes": [*fuse, {"name": "fuse", "level": "extended"}]
                        if second_pass == "extended"
                        else fuse,
                        "compile": {"backend": "onnxruntime", "graph_optimization_level": "basic"},
                    },
                },
            },
        }
    }


def _passes(g: BuildGraph) -> list[PassNode]:
    return [n for n in g if isinstance(n, PassNode)]


def test_identical_pass_prefixes_are_one_node() -> None:
    cfg = resolve_config(_two_variant_raw(), ["cpu", "arm"])
    g = build_graph(cfg, ("cpu", "arm"))
    (fuse,) = _passes(g)  # cpu/a, cpu/b and arm/ort-fp32 share it
    assert g.children(fuse.id) == ["arm/ort-fp32:compile", "cpu/a:compile", "cpu/b:compile"]
    assert g.is_acyclic()
    lines = describe_graph(g)  # in execution order: heads, passes, compiles, verifies
    assert lines[:3] == [
        "normalize [normalize]",
        "data [data]  <- normalize",
        "reference [reference]  <- data, normalize",
    ]
    assert [line.split(" [")[1].split("]")[0] for line in lines[3:]] == ["pass"] + [
        "compile"
    ] * 3 + ["verify"] * 3
    text = "\n".join(lines)
    assert "cpu/a:verify [verify]" in text and "<- normalize" in text
    assert f"{fuse.id} [pass] " in text and "cpu/a:compile [compile] backend=onnxruntime" in text


def test_artifacts_name_their_compile_and_verify_nodes() -> None:
    g = build_graph(resolve_config(_two_variant_raw("extended"), ["cpu"]), ("cpu",))
    assert [a.id for a in g.artifacts] == ["cpu/a", "cpu/b"]
    for a in g.artifacts:
        assert a.compile.id in g and a.verify.id in g
        assert a.verify.compile == a.compile.id and g.parents(a.verify.id) == sorted(
            [a.compile.id, g.data.id, g.reference.id]
        )
        assert (a.compile.target, a.compile.variant) == (a.target, a.variant)
    b = g.artifacts[1].compile
    extended = g.typed(b.source, PassNode)
    assert extended.config.model_dump()["level"] == "extended"
    assert g.handoff_children(extended.source) == [extended.id]  # the pass takes it in memory
    assert g.handoff_children(extended.id) == []  # compile reads the file


def test_a_target_without_variants_gets_a_note() -> None:
    cfg = resolve_config({"targets": {"gpu": {"pipeline": "none"}}}, ["gpu"])
    g = build_graph(cfg, ("gpu",))
    assert g.artifacts == [] and g.target_notes["gpu"].startswith("no variants for target 'gpu'")


def test_the_pass_key_uses_the_tolerance_of_its_output_precision() -> None:
    raw = {
        "targets": {
            "cpu": {
                "pipeline": "none",
                "variants": {
                    "q": {"passes": [{"name": "quantize"}], "compile": {"backend": "onnxruntime"}}
                },
            }
        }
    }
    g = build_graph(resolve_config(raw, ["cpu"]), ("cpu",))
    (quantize,) = _passes(g)
    host = probe_host()

    model = tiny_mlp()
    normalized = NormalizeOutput(
        record=NormalizeRecord(),
        contract=extract_contract(model),
        opset=17,
        ir_version=model.ir_version,
    )

    def key(*overrides: str) -> object:
        cfg = resolve_config(raw, ["cpu"], list(overrides))
        ctx = NodeContext(BuildInputs(Path("m"), "0", cfg, ()), g, host)
        ctx.results["normalize"] = NodeResult(status="ran", output=normalized)
        return PassKind().key(quantize, ctx)

    assert key("parity.tolerances.fp16.atol=0.5") == key()  # not quantize's precision
    assert key("parity.tolerances.int8.min_cosine=0.5") != key()


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


def test_passes_hand_models_on_in_memory(
    mlp_path: Path, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process, a pass whose parent ran in this build takes the parent's ModelProto, not its
    file; a parent from the cache is read from its entry. Both give the same bytes. (Only the
    in-process executor holds models: worker processes share nothing but the cache, and the
    patched onnx.load lives in this process.)"""
    reads: list[Path] = []
    real_load = onnx.load

    def load(f: object, *args: object, **kwargs: object) -> onnx.ModelProto:
        path = Path(str(f))
        if cache_dir in path.parents and "tmp" not in path.relative_to(cache_dir).parts:
            reads.append(path)  # a committed cache entry (not a pass's own scratch files)
        return real_load(f, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(onnx, "load", load)
    raw = _two_variant_raw("extended")
    here = {"raw": raw, "targets": ("cpu",), "executor": InProcessExecutor()}
    first = build(mlp_path, tmp_path / "p1", cache_dir, **here)
    passes = sorted(n for n in first.results if "#" in n)
    assert len(passes) == 2 and all(first.results[n].status == "ran" for n in passes)
    assert reads == []

    for n in passes:  # forget the passes: the first now reads normalize from its entry
        key = first.results[n].key
        shutil.rmtree(cache_dir / key[:2] / key)
    second = build(mlp_path, tmp_path / "p2", cache_dir, **here)
    assert reads == [first.results["normalize"].out / "model.onnx"]
    s = statuses(second)
    assert [s[n] for n in passes] == ["ran", "ran"]
    assert {n: second.results[n].digest for n in passes} == {
        n: first.results[n].digest for n in passes
    }
    assert s["cpu/a:compile"] == s["cpu/b:compile"] == "cached"  # same digests, same keys


def test_a_missing_backend_skips_its_artifact_with_the_install_hint(
    mlp_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = OnnxRuntimeBackend.availability

    def availability(cls: type[OnnxRuntimeBackend], target: str) -> Availability:
        if target == "arm":
            return Availability(ok=False, reason="no arm build", install="pip install ort-arm")
        return real(target)

    monkeypatch.setattr(OnnxRuntimeBackend, "availability", classmethod(availability))
    out = build(mlp_path, tmp_path / "p", None)
    compile_, verify = out.results["arm/ort-fp32:compile"], out.results["arm/ort-fp32:verify"]
    assert (compile_.status, compile_.reason) == ("skipped", "no arm build")
    assert verify.status == "skipped" and verify.reason.startswith("upstream arm/ort-fp32:compile")
    assert verify.install == compile_.install == "pip install ort-arm"
    arm = out.manifest.artifact("arm/ort-fp32")
    assert arm.status == "skipped" and arm.install == "pip install ort-arm"
    assert out.manifest.artifact("cpu/ort-fp32").status == "built"


def test_a_failing_compile_stays_in_its_branch(
    mlp_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = OnnxRuntimeBackend.build

    def build_or_fail(self: OnnxRuntimeBackend, model: Path, request, out: Path):  # type: ignore[no-untyped-def]
        if request.target == "arm":
            raise RuntimeError("arm compiler crashed")
        return real(self, model, request, out)

    monkeypatch.setattr(OnnxRuntimeBackend, "build", build_or_fail)
    # in-process: the patch lives in this process (worker processes fail for real in
    # test_executors.py: a signal, a memory limit, a wall-time limit)
    out = build(mlp_path, tmp_path / "p", None, executor=InProcessExecutor())
    s = statuses(out)
    assert s["arm/ort-fp32:compile"] == "failed" and s["arm/ort-fp32:verify"] == "skipped"
    assert s["cpu/ort-fp32:compile"] == "ran" and s["cpu/ort-fp32:verify"] == "ran"
    arm = out.manifest.artifact("arm/ort-fp32")
    assert arm.status == "failed" and "arm compiler crashed" in arm.reason
    assert out.failures == ["arm/ort-fp32:compile: RuntimeError: arm compiler crashed"]


def test_unavailable_target_is_skipped_with_reason(mlp_path: Path, tmp_path: Path) -> None:
    raw = {"targets": {"gpu": {"variants": {"ort": {"compile": {"backend": "onnxruntime"}}}}}}
    out = build(mlp_path, tmp_path / "p", None, targets=("gpu", "cpu"), raw=raw)
    gpu = out.manifest.artifact("gpu/ort")
    assert gpu.status == "skipped" and "no onnxruntime artifact for target 'gpu'" in gpu.reason
    assert out.manifest.artifact("cpu/ort-fp32").status == "built"


def test_no_cache_leaves_no_cache_entries(mlp_path: Path, tmp_path: Path, cache_dir: Path) -> None:
    build(mlp_path, tmp_path / "p", None)
    assert not cache_dir.exists()


class _SeesCacheRoot(InProcessExecutor):
    """In-process, noting the folder each node was given for the backends' own caches."""

    def __init__(self) -> None:
        super().__init__()
        self.roots: dict[str, Path | None] = {}

    def submit(self, node, kind, ctx, out) -> None:  # type: ignore[no-untyped-def]
        self.roots[node.id] = ctx.inputs.cache_root
        super().submit(node, kind, ctx, out)


def test_without_a_cache_the_backends_caches_live_and_die_with_the_build(
    mlp_path: Path, tmp_path: Path
) -> None:
    """TVM's tuning databases and libcuda stand-in, TensorRT's timing caches: with a node
    cache, beside it; with none, in the build's temporary folder, never the default cache
    root (where a `--no-cache` build used to leave them)."""
    seen = _SeesCacheRoot()
    build(mlp_path, tmp_path / "p", None, executor=seen)
    roots = {seen.roots[n] for n in seen.roots if n.endswith(":compile")}
    assert len(roots) == 1 and None not in roots
    (root,) = roots
    assert root.is_absolute() and not root.exists()  # removed with the build's temporary folder
    assert not (tmp_path / "default-cache").exists()  # tests/conftest.py's default root

    cached = _SeesCacheRoot()
    build(mlp_path, tmp_path / "q", tmp_path / "c", executor=cached)
    assert {cached.roots[n] for n in cached.roots if n.endswith(":compile")} == {
        (tmp_path / "c").absolute()
    }


def test_compile_nodes_read_calibration_only_when_their_backend_does() -> None:
    g = build_graph(resolve_config(_two_variant_raw(), ["cpu"]), ("cpu",))
    compiles = [n for n in g if isinstance(n, CompileNode)]
    assert compiles and all(g.data.id not in g.parents(c.id) for c in compiles)


def test_a_new_output_kind_rejudges_the_cached_artifacts(
    mlp_path: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """The model's bytes are the same, so every compile is cached; what normalize read off
    the graph (here the output's kind, set in the config) is not, and the verdicts that
    judge by it run again with it."""
    first = build(mlp_path, tmp_path / "p1", cache_dir, targets=("cpu",))
    again = build(
        mlp_path,
        tmp_path / "p2",
        cache_dir,
        targets=("cpu",),
        raw={"parity": {"kinds": {"y": "embedding"}}},
    )
    s = statuses(again)
    assert s["normalize"] == "ran" and s["cpu/ort-fp32:compile"] == "cached"
    assert s["cpu/ort-fp32:verify"] == "ran"
    kinds = [
        o.results["cpu/ort-fp32:verify"].output.parity.outputs["y"].kind  # type: ignore[union-attr]
        for o in (first, again)
    ]
    assert kinds[0] != "embedding" and kinds[1] == "embedding"
