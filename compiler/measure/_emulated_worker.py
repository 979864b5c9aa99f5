"""Runs arm artifacts inside the emulated aarch64 Python (started by compiler.measure.emulation).

Self-contained on purpose: it imports the standard library, numpy and the runtime each
artifact needs, nothing of the project (its pydantic models and onnx would cost seconds to
import under emulation). How each runtime loads an artifact mirrors that backend's runner
in targets/ and reads the same `runtime` dict from the manifest; tests/test_emulation.py
builds artifacts with the real backends so a drift between the two shows up as a failure.

Usage: python3.11 _emulated_worker.py JOB.json

JOB.json: {"protocol": 1, "feeds": "feeds.npz" (keys "<00000>.<input>"), "threads": int,
"out_dir": str, "artifacts": [{"id", "backend", "dir", "runtime", "inputs", "outputs"}]}.
For each artifact, in order, it writes <out_dir>/<index>.npz (keys "<00000>.<output>") on
success and appends one JSON line to <out_dir>/results.jsonl; the host treats a missing line
as "the worker died on this artifact".
"""

from __future__ import annotations

import json
import os
import platform
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PROTOCOL", "main"]

PROTOCOL = 1
Feeds = dict[str, np.ndarray]
RunFn = Callable[[Feeds], dict[str, np.ndarray]]


def _short(exc: BaseException, limit: int = 600) -> str:
    text = " ".join(str(exc).split())
    text = text[:limit] + ("..." if len(text) > limit else "")
    return f"{type(exc).__name__}: {text}"


# --- one loader per backend: (artifact dir, runtime dict, artifact entry of the job)
# -> (run function, runtime version, details for the record)


def _load_onnxruntime(
    d: Path, rt: dict[str, Any], art: dict[str, Any]
) -> tuple[RunFn, str, dict[str, Any]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[rt.get("graph_optimization_level", "all")]
    so.intra_op_num_threads = art["threads"] or int(rt.get("intra_op_num_threads", 0))
    so.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL
        if rt.get("execution_mode") == "parallel"
        else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(d / rt["model"]), so, providers=["CPUExecutionProvider"])
    names = list(art["outputs"])

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        return dict(zip(names, sess.run(names, feeds), strict=True))

    details = {"graph_optimization_level": rt.get("graph_optimization_level", "all")}
    return run, ort.__version__, details


def _load_openvino(
    d: Path, rt: dict[str, Any], art: dict[str, Any]
) -> tuple[RunFn, str, dict[str, Any]]:
    import openvino as ov

    # The ARM CPU plugin defaults to f16: always ask for the artifact's own precision.
    want = rt["inference_precision"]
    cfg: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": want,
        "PERFORMANCE_HINT": rt.get("performance_hint", "LATENCY"),
    }
    threads = art["threads"] or int(rt.get("num_threads", 0))
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    if rt.get("num_streams"):
        cfg["NUM_STREAMS"] = int(rt["num_streams"])
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(d / rt["xml"])), "CPU", cfg)
    got = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    if got != want:
        raise RuntimeError(
            f"the aarch64 CPU plugin compiled this artifact as {got}, not its {want}: "
            "this precision does not run on this CPU"
        )
    request = compiled.create_infer_request()
    ports = {name: compiled.output(name) for name in art["outputs"]}

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        result = request.infer(feeds)
        return {name: np.array(result[port], copy=True) for name, port in ports.items()}

    details = {"inference_precision": got}
    return run, ov.__version__.split("-")[0], details


def _load_tvm(
    d: Path, rt: dict[str, Any], art: dict[str, Any]
) -> tuple[RunFn, str, dict[str, Any]]:
    os.environ["TVM_USE_RUNTIME_LIB"] = "1"  # the runtime library only; no compiler here
    import tvm
    from tvm.runtime import vm as tvm_vm

    if rt.get("device", "cpu") != "cpu":
        raise RuntimeError(f"a tvm artifact for device '{rt['device']}' does not run on a CPU")
    dev = tvm.cpu(0)
    if art["threads"]:
        tvm.get_global_func("runtime.config_threadpool")(1, art["threads"])
    machine = tvm_vm.VirtualMachine(tvm.runtime.load_module(str(d / rt["library"])), dev)
    entry = rt.get("entry", "main")
    fn = machine[entry]
    specs = list(rt["inputs"])  # [{"name", "shape", "dtype"}], in the entry's parameter order
    names = list(art["outputs"])

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        for spec in specs:
            got = list(feeds[spec["name"]].shape)
            want = spec["shape"]
            if any(isinstance(w, int) and w != g for w, g in zip(want, got, strict=True)):
                raise ValueError(f"input '{spec['name']}': shape {got}, library built for {want}")
        args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[s["name"]]), dev) for s in specs]
        out = fn(*args)
        outs = [out] if isinstance(out, tvm.runtime.Tensor) else list(out)
        if len(outs) != len(names):
            raise RuntimeError(f"entry '{entry}' returned {len(outs)} outputs, expected {names}")
        return {n: o.numpy() for n, o in zip(names, outs, strict=True)}

    return run, tvm.__version__, {"entry": entry, "shapes": rt.get("shapes", "static")}


LOADERS = {"onnxruntime": _load_onnxruntime, "openvino": _load_openvino, "tvm": _load_tvm}


def _unpack(arrays: Any) -> list[Feeds]:
    feeds: dict[int, Feeds] = {}
    for key in arrays.files:
        idx, _, name = key.partition(".")
        feeds.setdefault(int(idx), {})[name] = arrays[key]
    return [feeds[i] for i in sorted(feeds)]


def _cpu_features() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() == "features":
                    return sorted(value.split())
    except OSError:
        pass
    return []


def _run_one(art: dict[str, Any], feeds: list[Feeds], out_dir: Path) -> dict[str, Any]:
    index = art["index"]
    rec: dict[str, Any] = {"index": index, "id": art["id"], "backend": art["backend"]}
    loader = LOADERS.get(art["backend"])
    if loader is None:
        return rec | {
            "ok": False,
            "stage": "load",
            "error": f"no emulated runner for backend '{art['backend']}'",
        }
    try:
        run, version, details = loader(Path(art["dir"]), art["runtime"], art)
    except Exception as exc:
        return rec | {"ok": False, "stage": "load", "error": _short(exc)}
    rec |= {"runtime_version": version, "details": details}
    try:
        outs = [run(feed) for feed in feeds]
    except Exception as exc:
        return rec | {"ok": False, "stage": "run", "error": _short(exc)}
    path = out_dir / f"{index:03d}.npz"
    arrays: dict[str, Any] = {f"{i:05d}.{k}": v for i, o in enumerate(outs) for k, v in o.items()}
    np.savez(path, **arrays)
    return rec | {"ok": True, "outputs": path.name}


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    if job.get("protocol") != PROTOCOL:
        print(f"worker speaks protocol {PROTOCOL}, job has {job.get('protocol')}", file=sys.stderr)
        return 2
    out_dir = Path(job["out_dir"])
    header = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_features": _cpu_features(),
        "cpu_count": os.cpu_count() or 1,
    }
    (out_dir / "header.json").write_text(json.dumps(header), encoding="utf-8")
    with np.load(job["feeds"]) as arrays:
        feeds = _unpack(arrays)
    with open(out_dir / "results.jsonl", "a", encoding="utf-8") as results:
        for art in job["artifacts"]:
            try:
                rec = _run_one(art | {"threads": job.get("threads", 0)}, feeds, out_dir)
            except Exception as exc:  # anything else: still a verdict on this artifact
                rec = {
                    "index": art["index"],
                    "id": art["id"],
                    "ok": False,
                    "stage": "worker",
                    "error": _short(exc),
                    "trace": traceback.format_exc(limit=4),
                }
            results.write(json.dumps(rec) + "\n")
            results.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
