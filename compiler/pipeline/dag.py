"""The pass DAG: normalize -> data -> reference, pass chains (identical prefixes shared) ->
per-variant compile -> verify, run in topological order with every node's output cached
by content hash.

A node's cache key is the sha256 of: its kind, its implementation's version, its
parameters, the versions of the libraries it uses, and the content digests of its parents'
outputs. Nothing else enters a key, so a config change re-runs exactly the nodes whose
parameters changed and their descendants.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import onnx

from compiler import __version__
from compiler.core.contract import Contract, extract_contract
from compiler.core.errors import BackendUnavailable, CompilePkgError, short_message
from compiler.core.host import HostInfo, Requirements, probe_host
from compiler.measure.verify import verify_artifact
from compiler.pipeline.cache import Cache
from compiler.pipeline.config import BuildConfig, VariantConfig, canonical_json
from compiler.pipeline.data import feeds_digest, generate_feeds, read_feeds, read_npz, write_npz
from compiler.pipeline.normalize import (
    MODEL_FILE,
    dir_digest,
    load_onnx,
    normalize_model,
    save_model,
)
from passes.registry import PASSES, PassConfig, PassContext, make_pass
from targets.registry import BuildRequest, get_backend

__all__ = [
    "BuildInputs",
    "NodeResult",
    "build_graph",
    "describe_graph",
    "run_graph",
    "pack_feeds",
    "unpack_feeds",
]

NODE_VERSIONS = {"normalize": "1", "data": "1", "reference": "1", "verify": "3"}


@dataclass(frozen=True)
class BuildInputs:
    source_path: Path  # an ONNX file (torch sources are exported to one first)
    source_digest: str
    config: BuildConfig
    targets: tuple[str, ...]
    sample_data: Path | None = None
    calibration_data: Path | None = None


@dataclass
class NodeResult:
    status: str  # ran | cached | failed | skipped
    out: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    digest: str = ""
    key: str = ""
    seconds: float = 0.0
    reason: str = ""


def _h(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


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


# ----------------------------------------------------------------------------- feeds


def pack_feeds(feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {f"{i:05d}.{name}": arr for i, feed in enumerate(feeds) for name, arr in feed.items()}


def unpack_feeds(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    feeds: dict[int, dict[str, np.ndarray]] = {}
    for key, arr in arrays.items():
        idx, _, name = key.partition(".")
        feeds.setdefault(int(idx), {})[name] = arr
    return [feeds[i] for i in sorted(feeds)]


# ----------------------------------------------------------------------------- run


@dataclass
class _Run:
    g: nx.DiGraph
    inputs: BuildInputs
    cache: Cache
    host: HostInfo
    results: dict[str, NodeResult]
    contract: Contract | None = None
    workdir: Path | None = None

    def res(self, nid: str) -> NodeResult:
        return self.results[nid]

    def feeds(self, which: str) -> list[dict[str, np.ndarray]]:
        return unpack_feeds(read_npz(self.res("data").out / f"{which}.npz"))  # type: ignore[operator]

    def model_path(self, nid: str) -> Path:
        return self.res(nid).out / MODEL_FILE  # type: ignore[operator]


def _key_normalize(run: _Run, nid: str) -> dict[str, Any]:
    return {
        "source": run.inputs.source_digest,
        "normalize": run.inputs.config.normalize.model_dump(),
        "dims": {k: v.model_dump() for k, v in run.inputs.config.dims.items()},
        "libs": {"onnx": onnx.__version__},
    }


def _exec_normalize(run: _Run, nid: str, out: Path) -> dict[str, Any]:
    cfg = run.inputs.config
    model = load_onnx(run.inputs.source_path)
    model, record = normalize_model(
        model, str(run.inputs.source_path.name), cfg.normalize.min_opset
    )
    contract = extract_contract(model, cfg.dims)
    save_model(model, out)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return {
        "record": record,
        "contract": contract.model_dump(mode="json"),
        "opset": opset,
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }


def _key_data(run: _Run, nid: str) -> dict[str, Any]:
    cfg = run.inputs.config
    user = {}
    for label, path in (
        ("samples", run.inputs.sample_data),
        ("calibration", run.inputs.calibration_data),
    ):
        if path is not None:
            user[label] = dir_digest(path) if path.is_dir() else _file_digest(path)
    return {
        "samples": cfg.parity.samples,
        "seed": cfg.parity.seed,
        "ranges": {k: v.model_dump() for k, v in cfg.inputs.items()},
        "user": user,
    }


def _file_digest(path: Path) -> str:
    from compiler.pipeline.normalize import file_sha256

    return file_sha256(path)


def _exec_data(run: _Run, nid: str, out: Path) -> dict[str, Any]:
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
    write_npz(out / "samples.npz", pack_feeds(samples))
    write_npz(out / "calibration.npz", pack_feeds(calib))
    return {
        "samples": len(samples),
        "samples_source": s_src,
        "calibration": len(calib),
        "calibration_source": c_src,
        "samples_digest": feeds_digest(samples),
    }


def _key_reference(run: _Run, nid: str) -> dict[str, Any]:
    import onnxruntime as ort

    return {"libs": {"onnxruntime": ort.__version__}}


def _exec_reference(run: _Run, nid: str, out: Path) -> dict[str, Any]:
    import onnxruntime as ort

    from targets.onnxruntime.backend import reference_session

    assert run.contract is not None
    sess = reference_session(run.model_path("normalize"))
    names = [o.name for o in run.contract.outputs]
    outs = [dict(zip(names, sess.run(names, feed), strict=True)) for feed in run.feeds("samples")]
    write_npz(out / "outputs.npz", pack_feeds(outs))
    return {
        "runtime": f"onnxruntime {ort.__version__}",
        "provider": "CPUExecutionProvider",
        "precision": "fp32",
        "samples": len(outs),
    }


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
        "tolerances": run.inputs.config.parity.tolerances["int8"].model_dump()
        if p.uses_reference
        else None,
    }


def _pass_context(run: _Run, target: str | None, scratch: Path) -> PassContext:
    from targets.onnxruntime.backend import reference_session

    assert run.contract is not None
    data_meta = run.res("data").meta
    ref_path = run.model_path("normalize")
    names = [o.name for o in run.contract.outputs]
    sess_box: list[Any] = []

    def reference(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not sess_box:
            sess_box.append(reference_session(ref_path))
        return dict(zip(names, sess_box[0].run(names, feeds), strict=True))

    return PassContext(
        contract=run.contract,
        workdir=scratch,
        target=target,
        target_isa=tuple(run.host.isa) if target == "cpu" else (),
        calibration=lambda: run.feeds("calibration"),
        calibration_source=data_meta.get("calibration_source", "generated"),
        reference=reference,
        tolerances={k: v.model_dump() for k, v in run.inputs.config.parity.tolerances.items()},
    )


def _exec_pass(run: _Run, nid: str, out: Path) -> dict[str, Any]:
    p = _pass_of(run, nid)
    parent = _model_parent(run.g, nid)
    model = onnx.load(run.model_path(parent))
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        result = p(model, _pass_context(run, run.g.nodes[nid].get("target"), Path(tmp)))
    save_model(result.model, out)
    return {"record": result.record}


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


def _exec_compile(run: _Run, nid: str, out: Path) -> dict[str, Any]:
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
            calibration_source=run.res("data").meta.get("calibration_source", "generated"),
        )
        result = cls().build(run.model_path(_model_parent(run.g, nid)), req, out)
    return {
        "backend": cls.name,
        "backend_version": cls.library_versions(),
        "files": sorted(result.files),
        "runtime": result.runtime,
        "requirements": result.requirements.model_dump(),
        "precision": result.precision,
        "notes": result.notes,
        "portable": result.portable,
        "status": result.status,
    }


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
        "tolerance": cfg.parity.tolerances[v.precision].model_dump(),
        "outputs": {
            k: {p: t.model_dump() for p, t in d.items()} for k, d in cfg.parity.outputs.items()
        },
        "latency": cfg.latency.model_dump(),
    }


def _exec_verify(run: _Run, nid: str, out: Path) -> dict[str, Any]:
    node = run.g.nodes[nid]
    v: VariantConfig = node["config"]
    comp = run.res(f"{node['target']}/{node['variant']}:compile")
    if comp.meta.get("status") == "deferred":
        return {
            "parity": {"status": "not-verified", "reason": "deferred: built on the serving host"},
            "latency": None,
        }
    assert run.contract is not None
    return verify_artifact(
        backend=comp.meta["backend"],
        artifact_dir=comp.out,  # type: ignore[arg-type]
        runtime=comp.meta["runtime"],
        requirements=Requirements(**comp.meta["requirements"]),
        portable=comp.meta["portable"],
        precision=v.precision,
        contract=run.contract,
        inputs=run.feeds("samples"),
        ref_outputs=unpack_feeds(read_npz(run.res("reference").out / "outputs.npz")),  # type: ignore[operator]
        ref_model=run.model_path("normalize"),
        parity_cfg=run.inputs.config.parity,
        latency_cfg=run.inputs.config.latency,
        host=run.host,
    )


_KINDS: dict[
    str, tuple[Callable[[_Run, str], dict[str, Any]], Callable[[_Run, str, Path], dict[str, Any]]]
] = {
    "normalize": (_key_normalize, _exec_normalize),
    "data": (_key_data, _exec_data),
    "reference": (_key_reference, _exec_reference),
    "pass": (_key_pass, _exec_pass),
    "compile": (_key_compile, _exec_compile),
    "verify": (_key_verify, _exec_verify),
}


def _skip_reason(run: _Run, nid: str) -> str:
    """Non-empty when this node cannot run: an upstream node failed, or a backend is missing."""
    for p in run.g.predecessors(nid):
        r = run.results.get(p)
        if r is not None and r.status in ("failed", "skipped"):
            return f"upstream {p} {r.status}" + (f": {r.reason}" if r.reason else "")
    node = run.g.nodes[nid]
    if node["kind"] == "compile":
        cls = get_backend(node["config"].compile.backend)
        avail = cls.availability(node["target"])
        if not avail.ok:
            return avail.reason + (f" (to get it: {avail.install})" if avail.install else "")
    return ""


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
        reason = _skip_reason(run, nid)
        if reason:
            res = NodeResult(status="skipped", reason=reason)
        else:
            res = _run_node(run, nid, kind)
        res.seconds = round(time.perf_counter() - start, 3)
        run.results[nid] = res
        if nid == "normalize" and res.status in ("ran", "cached"):
            run.contract = Contract.model_validate(res.meta["contract"])
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
        out, meta = hit
        return NodeResult(status="cached", out=out, meta=meta, digest=meta["digest"], key=key)
    scratch = run.cache.new_entry()
    try:
        meta = exec_fn(run, nid, scratch / "out")
    except BackendUnavailable as exc:  # missing library or hardware: a skip, with how to get it
        run.cache.discard(scratch)
        hint = f" (to get it: {exc.install})" if exc.install else ""
        return NodeResult(
            status="skipped", reason=f"{exc.backend} unavailable: {exc.reason}{hint}", key=key
        )
    except CompilePkgError as exc:
        run.cache.discard(scratch)
        return NodeResult(status="failed", reason=str(exc), key=key)
    except Exception as exc:
        run.cache.discard(scratch)
        return NodeResult(
            status="failed",
            reason=short_message(exc),
            key=key,
            meta={"traceback": traceback.format_exc(limit=8)},
        )
    meta = json.loads(json.dumps(meta, allow_nan=True))  # plain JSON, as a cache hit returns it
    meta["digest"] = _h({"files": dir_digest(scratch / "out"), "meta": _core_meta(kind, meta)})
    out, meta = run.cache.commit(key, scratch, meta)
    return NodeResult(status="ran", out=out, meta=meta, digest=meta["digest"], key=key)


def _core_meta(kind: str, meta: dict[str, Any]) -> Any:
    """The part of a node's record that describes its output (timings and hosts excluded)."""
    if kind == "verify":
        return {}  # measurements are leaves: nothing builds on their digest
    if kind == "pass":
        return {k: v for k, v in meta.get("record", {}).items() if k != "seconds"}
    return meta


def cleanup_scratch(cache: Cache) -> None:
    shutil.rmtree(cache.root / "tmp", ignore_errors=True)
