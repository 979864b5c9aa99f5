"""The pass DAG: normalize -> data -> reference, pass chains (identical prefixes shared) ->
per-variant compile -> verify, run in topological order with every node's output cached
by content hash.

A node's cache key is the sha256 of: its kind, its implementation's version, its
parameters, the versions of the libraries it uses, and the content digests of its parents'
outputs. Nothing else enters a key, so a config change re-runs exactly the nodes whose
parameters changed and their descendants.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import onnx

from compiler import __version__
from compiler.core.contract import Contract
from compiler.core.errors import BackendUnavailable, CompilePkgError, short_message
from compiler.core.feeds import Feeds, feeds_digest, read_feeds_npz, write_feeds_npz
from compiler.core.hashing import dir_digest, file_sha256, sha256_json
from compiler.core.host import HostInfo, probe_host
from compiler.core.records import (
    CompileOutput,
    DataOutput,
    NodeOutput,
    NodeResult,
    NormalizeOutput,
    NormalizeRecord,
    PassOutput,
    ReferenceOutput,
    VerifyOutput,
)
from compiler.core.targets import TARGET_ARCH
from compiler.measure.verify import verify_artifact
from compiler.pipeline.cache import Cache
from compiler.pipeline.config import BuildConfig, VariantConfig
from compiler.pipeline.data import generate_feeds, read_feeds
from compiler.pipeline.interface import extract_contract
from compiler.pipeline.normalize import MODEL_FILE, load_onnx, normalize_model, save_model
from passes.registry import PASSES, PassConfig, PassContext, make_pass
from targets.registry import BuildRequest, get_backend

__all__ = ["BuildInputs", "build_graph", "describe_graph", "run_graph"]

NODE_VERSIONS = {"normalize": "2", "data": "2", "reference": "2", "verify": "4"}


@dataclass(frozen=True)
class BuildInputs:
    source_path: Path  # an ONNX file (torch sources are exported to one first)
    source_digest: str
    config: BuildConfig
    targets: tuple[str, ...]
    sample_data: Path | None = None
    calibration_data: Path | None = None


def _h(obj: Any) -> str:
    return sha256_json(obj)


# ----------------------------------------------------------------------------- graph


def build_graph(config: BuildConfig, targets: tuple[str, ...]) -> nx.DiGraph:
    """Nodes carry `kind` and kind-specific attributes; pass prefixes are interned."""
    g = nx.DiGraph()
    g.add_node("normalize", kind="normalize")
    g.add_node("data", kind="data")
    g.add_node("reference", kind="reference")
    g.add_edge("normalize", "data")
    g.add_edge("normalize", "reference")
    g.add_edge("data", "reference")
    g.graph["target_notes"] = {}
    for target in targets:
        tcfg = config.targets.get(target)
        variants = (tcfg.variants if tcfg else None) or {}
        enabled = {k: v for k, v in variants.items() if v.enabled}
        if not enabled:
            g.graph["target_notes"][target] = (
                f"no variants for target '{target}' in pipeline "
                f"'{tcfg.pipeline if tcfg else 'default'}'"
            )
        for vname, variant in sorted(enabled.items()):
            parent = "normalize"
            for pcfg in variant.passes:
                parent = _add_pass(g, parent, pcfg, target)
            cid = f"{target}/{vname}:compile"
            g.add_node(cid, kind="compile", target=target, variant=vname, config=variant)
            g.add_edge(parent, cid)
            if get_backend(variant.compile.backend).uses_calibration:
                g.add_edge("data", cid)
            vid = f"{target}/{vname}:verify"
            g.add_node(vid, kind="verify", target=target, variant=vname, config=variant)
            g.add_edge(cid, vid)
            g.add_edge("reference", vid)
            g.add_edge("data", vid)
    return g


def _add_pass(g: nx.DiGraph, parent: str, pcfg: PassConfig, target: str) -> str:
    cls = PASSES[pcfg.name]
    ident = _h(
        {
            "parent": parent,
            "pass": pcfg.model_dump(mode="json"),
            "target": target if cls.target_dependent else None,
        }
    )[:8]
    prefix = f"{target}:" if cls.target_dependent else ""
    nid = f"{prefix}{pcfg.name}#{ident}"
    if nid not in g:
        g.add_node(nid, kind="pass", config=pcfg, target=target if cls.target_dependent else None)
        g.add_edge(parent, nid)
        if cls.uses_calibration:
            g.add_edge("data", nid)
        if cls.uses_reference:
            g.add_edge("reference", nid)
    return nid


def _model_parent(g: nx.DiGraph, nid: str) -> str:
    preds = [p for p in g.predecessors(nid) if g.nodes[p]["kind"] in ("normalize", "pass")]
    assert len(preds) == 1, (nid, preds)
    return preds[0]


def describe_graph(g: nx.DiGraph) -> list[str]:
    """Lines for --print-dag: each node with its parents, in execution order."""
    lines = []
    for nid in nx.lexicographical_topological_sort(g):
        node = g.nodes[nid]
        extra = ""
        if node["kind"] == "pass":
            params = node["config"].model_dump(exclude={"name"})
            extra = " " + json.dumps(params, sort_keys=True) if params else ""
        elif node["kind"] == "compile":
            c: VariantConfig = node["config"]
            extra = f" backend={c.compile.backend} precision={c.precision}"
        parents = sorted(g.predecessors(nid))
        lines.append(
            f"{nid} [{node['kind']}]{extra}" + (f"  <- {', '.join(parents)}" if parents else "")
        )
    for target, note in g.graph.get("target_notes", {}).items():
        lines.append(f"{target}: {note}")
    return lines


# ----------------------------------------------------------------------------- run


@dataclass
class _Run:
    g: nx.DiGraph
    inputs: BuildInputs
    cache: Cache
    host: HostInfo
    results: dict[str, NodeResult]
    contract: Contract | None = None

    def res(self, nid: str) -> NodeResult:
        return self.results[nid]

    def out(self, nid: str) -> Path:
        out = self.results[nid].out
        assert out is not None, nid
        return out

    def feeds(self, which: str) -> list[Feeds]:
        return read_feeds_npz(self.out("data") / f"{which}.npz")

    def model_path(self, nid: str) -> Path:
        return self.out(nid) / MODEL_FILE

    def data(self) -> DataOutput:
        return self.res("data").expect(DataOutput)


def _key_normalize(run: _Run, nid: str) -> dict[str, Any]:
    return {
        "source": run.inputs.source_digest,
        "normalize": run.inputs.config.normalize.model_dump(),
        "dims": {k: v.model_dump() for k, v in run.inputs.config.dims.items()},
        "libs": {"onnx": onnx.__version__},
    }


def _exec_normalize(run: _Run, nid: str, out: Path) -> NormalizeOutput:
    cfg = run.inputs.config
    model = load_onnx(run.inputs.source_path)
    model, record = normalize_model(
        model, str(run.inputs.source_path.name), cfg.normalize.min_opset
    )
    contract = extract_contract(model, cfg.dims)
    save_model(model, out)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return NormalizeOutput(
        record=NormalizeRecord.model_validate(record),
        contract=contract,
        opset=opset,
        ir_version=model.ir_version,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
    )


def _key_data(run: _Run, nid: str) -> dict[str, Any]:
    cfg = run.inputs.config
    user = {}
    for label, path in (
        ("samples", run.inputs.sample_data),
        ("calibration", run.inputs.calibration_data),
    ):
        if path is not None:
            user[label] = dir_digest(path) if path.is_dir() else file_sha256(path)
    return {
        "samples": cfg.parity.samples,
        "seed": cfg.parity.seed,
        "ranges": {k: v.model_dump() for k, v in cfg.inputs.items()},
        "user": user,
    }


def _exec_data(run: _Run, nid: str, out: Path) -> DataOutput:
    cfg, contract = run.inputs.config, run.contract
    assert contract is not None
    ranges = {k: (v.low, v.high) for k, v in cfg.inputs.items()}
    if run.inputs.sample_data is not None:
        samples, s_src = read_feeds(run.inputs.sample_data, contract), "user"
    else:
        samples, s_src = (
            generate_feeds(contract, cfg.parity.samples, cfg.parity.seed, ranges),
            "generated",
        )
    if run.inputs.calibration_data is not None:
        calib, c_src = read_feeds(run.inputs.calibration_data, contract), "user"
    elif s_src == "user":
        calib, c_src = samples, "user"
    else:
        calib = generate_feeds(contract, max(cfg.parity.samples, 16), cfg.parity.seed + 1, ranges)
        c_src = "generated"
    write_feeds_npz(out / "samples.npz", samples)
    write_feeds_npz(out / "calibration.npz", calib)
    return DataOutput(
        samples=len(samples),
        samples_source=s_src,  # type: ignore[arg-type]
        calibration=len(calib),
        calibration_source=c_src,  # type: ignore[arg-type]
        samples_digest=feeds_digest(samples),
    )


def _key_reference(run: _Run, nid: str) -> dict[str, Any]:
    import onnxruntime as ort

    return {"libs": {"onnxruntime": ort.__version__}}


def _exec_reference(run: _Run, nid: str, out: Path) -> ReferenceOutput:
    import onnxruntime as ort

    from targets.onnxruntime.backend import reference_session

    assert run.contract is not None
    sess = reference_session(run.model_path("normalize"))
    names = [o.name for o in run.contract.outputs]
    outs = [dict(zip(names, sess.run(names, feed), strict=True)) for feed in run.feeds("samples")]
    write_feeds_npz(out / "outputs.npz", outs)
    return ReferenceOutput(
        runtime=f"onnxruntime {ort.__version__}",
        provider="CPUExecutionProvider",
        precision="fp32",
        samples=len(outs),
    )


def _pass_of(run: _Run, nid: str):  # type: ignore[no-untyped-def]
    return make_pass(run.g.nodes[nid]["config"])


def _key_pass(run: _Run, nid: str) -> dict[str, Any]:
    p = _pass_of(run, nid)
    node = run.g.nodes[nid]
    return {
        "pass": p.name,
        "version": p.version,
        "params": node["config"].model_dump(mode="json"),
        "target": node.get("target"),
        "libs": p.libraries(),
        "tolerances": dataclasses.asdict(run.inputs.config.parity.tolerances["int8"])
        if p.uses_reference
        else None,
    }


def _pass_context(run: _Run, target: str | None, scratch: Path) -> PassContext:
    from targets.onnxruntime.backend import reference_session

    assert run.contract is not None
    ref_path = run.model_path("normalize")
    names = [o.name for o in run.contract.outputs]
    sess_box: list[Any] = []

    def reference(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not sess_box:
            sess_box.append(reference_session(ref_path))
        return dict(zip(names, sess_box[0].run(names, feeds), strict=True))

    same_arch = target is not None and TARGET_ARCH[target] == run.host.arch
    return PassContext(
        contract=run.contract,
        workdir=scratch,
        target=target,
        target_isa=tuple(run.host.isa) if same_arch and target != "gpu" else (),
        calibration=lambda: run.feeds("calibration"),
        calibration_source=run.data().calibration_source,
        reference=reference,
        tolerances=run.inputs.config.parity.policy().tolerances,
    )


def _exec_pass(run: _Run, nid: str, out: Path) -> PassOutput:
    p = _pass_of(run, nid)
    parent = _model_parent(run.g, nid)
    model = onnx.load(run.model_path(parent))
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        result = p(model, _pass_context(run, run.g.nodes[nid].get("target"), Path(tmp)))
    save_model(result.model, out)
    assert result.summary is not None
    return PassOutput(record=result.summary)


def _key_compile(run: _Run, nid: str) -> dict[str, Any]:
    node = run.g.nodes[nid]
    v: VariantConfig = node["config"]
    cls = get_backend(v.compile.backend)
    return {
        "backend": cls.name,
        "version": cls.version,
        "options": v.compile.model_dump(mode="json"),
        "target": node["target"],
        "variant": node["variant"],
        "precision": v.precision,
        "libs": cls.library_versions(),
    }


def _exec_compile(run: _Run, nid: str, out: Path) -> CompileOutput:
    node = run.g.nodes[nid]
    v: VariantConfig = node["config"]
    cls = get_backend(v.compile.backend)
    assert run.contract is not None
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        req = BuildRequest(
            target=node["target"],
            variant=node["variant"],
            precision=v.precision,
            options=v.compile,
            contract=run.contract,
            workdir=Path(tmp),
            calibration=lambda: run.feeds("calibration"),
            calibration_source=run.data().calibration_source,
        )
        result = cls().build(run.model_path(_model_parent(run.g, nid)), req, out)
    return CompileOutput(
        backend=cls.name,
        backend_version=cls.library_versions(),
        files=sorted(result.files),
        runtime=result.runtime,
        requirements=result.requirements,
        precision=result.precision,
        notes=result.notes,
        portable=result.portable,
        status=result.status,  # type: ignore[arg-type]
    )


def _key_verify(run: _Run, nid: str) -> dict[str, Any]:
    node = run.g.nodes[nid]
    v: VariantConfig = node["config"]
    h = run.host
    cfg = run.inputs.config
    return {
        "host": {
            "arch": h.arch,
            "cpu": h.cpu_model,
            "cpus": h.cpu_count,
            "isa": h.isa,
            "gpus": [g.model_dump() for g in h.gpus],
            "runtimes": h.runtimes,
        },
        "policy": cfg.policy().model_dump(mode="json", include={"parity", "latency"}),
        "precision": v.precision,
    }


def _exec_verify(run: _Run, nid: str, out: Path) -> VerifyOutput:
    node = run.g.nodes[nid]
    v: VariantConfig = node["config"]
    comp_id = f"{node['target']}/{node['variant']}:compile"
    comp = run.res(comp_id).expect(CompileOutput)
    assert run.contract is not None
    policy = run.inputs.config.policy()
    return verify_artifact(
        backend=comp.backend,
        runtime=comp.runtime,
        requirements=comp.requirements,
        portable=comp.portable,
        deferred=comp.status == "deferred",
        artifact_dir=run.out(comp_id),
        precision=v.precision,
        contract=run.contract,
        inputs=run.feeds("samples"),
        ref_outputs=read_feeds_npz(run.out("reference") / "outputs.npz"),
        ref_model=run.model_path("normalize"),
        parity=policy.parity,
        latency=policy.latency,
        host=run.host,
    )


_KINDS: dict[
    str, tuple[Callable[[_Run, str], dict[str, Any]], Callable[[_Run, str, Path], NodeOutput]]
] = {
    "normalize": (_key_normalize, _exec_normalize),
    "data": (_key_data, _exec_data),
    "reference": (_key_reference, _exec_reference),
    "pass": (_key_pass, _exec_pass),
    "compile": (_key_compile, _exec_compile),
    "verify": (_key_verify, _exec_verify),
}


def _skip(run: _Run, nid: str) -> NodeResult | None:
    """A skipped result when this node cannot run: an upstream node failed or was skipped, or
    its backend is missing here (with how to get it)."""
    for p in run.g.predecessors(nid):
        r = run.results.get(p)
        if r is not None and r.status in ("failed", "skipped"):
            reason = f"upstream {p} {r.status}" + (f": {r.reason}" if r.reason else "")
            return NodeResult(status="skipped", reason=reason, install=r.install)
    node = run.g.nodes[nid]
    if node["kind"] == "compile":
        cls = get_backend(node["config"].compile.backend)
        avail = cls.availability(node["target"])
        if not avail.ok:
            return NodeResult(status="skipped", reason=avail.reason, install=avail.install)
    return None


def run_graph(
    g: nx.DiGraph,
    inputs: BuildInputs,
    cache: Cache,
    on_event: Callable[[str, NodeResult | None], None] = lambda nid, r: None,
) -> dict[str, NodeResult]:
    """Run every node in topological order; failures stay in their branch."""
    run = _Run(g=g, inputs=inputs, cache=cache, host=probe_host(), results={})
    for nid in nx.lexicographical_topological_sort(g, key=_order_key(g)):
        on_event(nid, None)
        kind = g.nodes[nid]["kind"]
        start = time.perf_counter()
        res = _skip(run, nid) or _run_node(run, nid, kind)
        res.seconds = round(time.perf_counter() - start, 3)
        run.results[nid] = res
        if isinstance(res.output, NormalizeOutput):
            run.contract = res.output.contract
        on_event(nid, res)
    return run.results


def _order_key(g: nx.DiGraph) -> Callable[[str], str]:
    rank = {"normalize": 0, "data": 1, "reference": 2, "pass": 3, "compile": 4, "verify": 5}
    return lambda nid: f"{rank[g.nodes[nid]['kind']]}:{nid}"


def _run_node(run: _Run, nid: str, kind: str) -> NodeResult:
    key_fn, exec_fn = _KINDS[kind]
    try:
        material = key_fn(run, nid)
    except Exception as exc:
        return NodeResult(status="failed", reason=f"cannot compute cache key: {short_message(exc)}")
    parents = {p: run.results[p].digest for p in sorted(run.g.predecessors(nid))}
    key = _h(
        {
            "kind": kind,
            "node_version": NODE_VERSIONS.get(kind, "1"),
            "tool": __version__,
            "material": material,
            "parents": parents,
        }
    )
    hit = run.cache.get(key)
    if hit is not None:
        out, doc = hit
        cached = NodeResult.model_validate(doc)
        return cached.model_copy(update={"status": "cached", "out": out, "key": key})
    scratch = run.cache.new_entry()
    try:
        output = exec_fn(run, nid, scratch / "out")
    except BackendUnavailable as exc:  # missing library or hardware: a skip, with how to get it
        run.cache.discard(scratch)
        reason = f"{exc.backend} unavailable: {exc.reason}"
        return NodeResult(status="skipped", reason=reason, install=exc.install, key=key)
    except CompilePkgError as exc:
        run.cache.discard(scratch)
        return NodeResult(status="failed", reason=str(exc), key=key)
    except Exception as exc:
        run.cache.discard(scratch)
        return NodeResult(
            status="failed",
            reason=short_message(exc),
            key=key,
            traceback=traceback.format_exc(limit=8),
        )
    digest = _h({"files": dir_digest(scratch / "out"), "output": _core_output(output)})
    result = NodeResult(status="ran", output=output, digest=digest, key=key)
    out = run.cache.commit(key, scratch, result.model_dump(mode="json", exclude={"out"}))
    return result.model_copy(update={"out": out})


def _core_output(output: NodeOutput) -> Any:
    """The part of a node's output that describes what it made (measurements excluded)."""
    if isinstance(output, VerifyOutput):
        return {}  # measurements are leaves: nothing builds on their digest
    return output.model_dump(mode="json")


def cleanup_scratch(cache: Cache) -> None:
    shutil.rmtree(cache.root / "tmp", ignore_errors=True)
