#!/usr/bin/env python3
"""Verify a package's TVM gpu artifacts on an NVIDIA GPU host that has no TVM installed.

Two steps, on two machines:

  here (build host, TVM installed):
      python scripts/gpu_verify.py pack-runtime build/tvm_runtime      # ~22 MB runtime-only TVM
  there (GPU host: NVIDIA driver, Python 3.11, numpy, this source tree; no TVM, no pydantic):
      python scripts/gpu_verify.py verify PACKAGE --tvm-runtime build/tvm_runtime \
          --out gpu_verification.json   # beside, not inside, the package
  back here:
      compile-pkg verify PACKAGE --gpu-record gpu_verification.json   # serving ranks by it

`verify` loads every built gpu/tvm-* artifact with targets/tvm/runtime.py on the runtime-only
TVM (TVM_USE_RUNTIME_LIB=1), checks the files' sha256 against manifest.json (schema 2),
judges outputs against reference/outputs.npz as the build does: compiler.core.parity with the
package's recorded tolerances (`policy.parity`), and, where the policy names a task metric and
reference/labels.json holds the samples' labels, compiler.core.task's paired task check and
verdict (the metric must import here; where it cannot, the record says why and the outputs'
closeness decides). It times each artifact CUDA-synchronized (warm-up, then p50/p99 with
compiler.core.latency) and, where onnxruntime imports, times the package's reference
(reference/model.onnx on ONNX Runtime CPU, default settings) beside it in paired ABBA blocks on
the same host: the speedup with its interval (numpy in, numpy out on both sides). It writes one
JSON record naming the GPU and the host's CPU. Besides the carried TVM copy it needs numpy and
the project's bare modules (standard library and numpy only), and exits non-zero when an
artifact fails its verdict or cannot run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project's bare modules

from compiler.core.feeds import (  # noqa: E402
    Feeds,
    read_feeds_npz,
    read_labels,
)
from compiler.core.hashing import file_sha256  # noqa: E402
from compiler.core.latency import measure_paired, summarize  # noqa: E402
from compiler.core.parity import IndexScores, compare_outputs, read_scores  # noqa: E402
from compiler.core.settings import TvmSettings, settings_from_json  # noqa: E402
from compiler.core.task import score_task, verdict  # noqa: E402
from compiler.core.tolerance import ParityPolicy  # noqa: E402
from targets.tvm import runtime as tvm_runtime  # noqa: E402
from targets.tvm.runtime_pack import main as pack_main  # noqa: E402

SCHEMA = "compile-pkg.gpu-verification.v3"
MANIFEST_SCHEMA = 2
# the paired timing against the reference: as the build's (compiler/measure/timing.py)
CONFIDENCE = 0.95
TARGET_HALFWIDTH = 0.03
MAX_PAIRS = 20
PAIRED_BUDGET_S = 20.0
BLOCK_S = 0.05  # each block holds enough runs to last about this long (at least 3)


def _gpu_info() -> dict[str, Any]:
    info: dict[str, Any] = {}
    smi = shutil.which("nvidia-smi")
    if smi:
        q = "name,compute_cap,driver_version,memory.total,clocks.max.sm"
        out = subprocess.run(
            [smi, f"--query-gpu={q}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        if out:
            keys = ["name", "compute_capability", "driver", "memory_mib", "max_sm_clock_mhz"]
            first = out.splitlines()[0].split(",")
            info = dict(zip(keys, (v.strip() for v in first), strict=False))
    return info


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("flags", "features"):
                return sorted(set(value.split()))
    except OSError:
        pass
    return []


def _measured_on(target: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """This host as compile-pkg's records name one (compiler/core/host.py HostInfo; the
    importer keeps the ISA flags that matter)."""
    gpu = _gpu_info() if target == "gpu" else {}
    memory = str(gpu.get("memory_mib", "0")).split(".")[0]
    runtimes = {}
    if (tvm := _runtime_record(results).get("tvm")) is not None:
        runtimes["tvm"] = tvm
    try:
        import onnxruntime

        runtimes["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return {
        "arch": platform.machine(),
        "cpu_model": _cpu_info()["model"],
        "cpu_count": os.cpu_count() or 1,
        "isa": _cpu_flags(),
        "os": f"{platform.system()} {platform.release()}",
        "hostname": platform.node(),
        "gpus": [
            {
                "name": gpu["name"],
                "compute_capability": gpu.get("compute_capability", ""),
                "driver": gpu.get("driver", ""),
                "memory_mib": int(memory) if memory.isdigit() else 0,
            }
        ]
        if gpu.get("name")
        else [],
        "runtimes": runtimes,
        "measured_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _cpu_info() -> dict[str, Any]:
    """The host's CPU model and the cores this process may use (the reference's threads)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "cores": cores}


@dataclasses.dataclass
class _Reference:
    """The package's reference model on ONNX Runtime CPU, default settings, as the build ran it;
    `run` is None where it cannot run here (`reason` says why)."""

    run: Callable[[Feeds], object] | None
    record: dict[str, Any]


def _reference(pkg: Path) -> _Reference:
    model = pkg / "reference" / "model.onnx"
    try:
        import onnxruntime as ort
    except ImportError:
        return _Reference(
            None,
            {
                "status": "skipped",
                "reason": "onnxruntime does not import here; pip install onnxruntime to time "
                "the package's reference beside each artifact",
            },
        )
    if not model.is_file():
        return _Reference(None, {"status": "skipped", "reason": f"{model} is missing"})
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return _Reference(
        lambda feed: session.run(names, feed),
        {
            "status": "timed",
            "model": "reference/model.onnx",
            "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider, default settings",
            "cpu": _cpu_info(),
        },
    )


def _block(fn: Callable[[], object], sync: Callable[[], None], runs: int) -> Callable[[], list]:
    return lambda: _timed(fn, sync, runs)


def _runs_per_block(fn: Callable[[], object], sync: Callable[[], None]) -> int:
    """Runs that last about BLOCK_S (at least 3), from the median of 3 runs."""
    once = sorted(_timed(fn, sync, 3))[1]
    return max(3, min(1000, math.ceil(BLOCK_S / max(once, 1e-6))))


def _paired_speedup(
    artifact: Callable[[], object], sync: Callable[[], None], reference: Callable[[], object]
) -> dict[str, Any]:
    """The reference's time over the artifact's in ABBA-paired blocks (numpy in and out on
    both sides), with its interval, as compiler.core.latency measures a build's speedups."""
    nothing = lambda: None  # noqa: E731
    art_runs = _runs_per_block(artifact, sync)
    ref_runs = _runs_per_block(reference, nothing)
    paired = measure_paired(
        _block(artifact, sync, art_runs),
        _block(reference, nothing, ref_runs),
        confidence=CONFIDENCE,
        target_halfwidth=TARGET_HALFWIDTH,
        max_pairs=MAX_PAIRS,
        budget_s=PAIRED_BUDGET_S,
    )
    art_all = [t for b in paired.artifact for t in b]
    ref_all = [t for b in paired.reference for t in b]
    return {
        "speedup": dataclasses.asdict(paired.speedup),
        "stopped": paired.stopped,
        "runs_per_block": {"artifact": art_runs, "reference": ref_runs},
        "artifact": dataclasses.asdict(summarize(art_all, 1, keep_samples=False)),
        "reference": dataclasses.asdict(summarize(ref_all, 1, keep_samples=False)),
        "what": "reference p50 / artifact p50 per pair of blocks (numpy in, numpy out, the "
        "artifact synchronized), the median over pairs and its order-statistic interval",
    }


def _shape_of(feed: Feeds, settings: TvmSettings) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(feed[t.name].shape) for t in settings.inputs)


def _fitting(settings: TvmSettings, samples: list[Feeds]) -> list[int]:
    """The samples a static library can run (its input shapes exactly); all for dynamic."""
    if settings.shapes != "static":
        return list(range(len(samples)))
    built = tuple(tuple(t.shape) for t in settings.inputs)
    return [i for i, feed in enumerate(samples) if _shape_of(feed, settings) == built]


def _shapes(settings: TvmSettings) -> str:
    return ", ".join(f"{t.name}{list(t.shape)}" for t in settings.inputs)


def _sample_shapes(samples: list[Feeds]) -> str:
    seen: dict[str, int] = {}
    for feed in samples:
        key = ", ".join(f"{name}{list(v.shape)}" for name, v in feed.items())
        seen[key] = seen.get(key, 0) + 1
    shown = sorted(seen.items(), key=lambda kv: -kv[1])[:4]
    more = f", {len(seen) - 4} more" if len(seen) > 4 else ""
    return "; ".join(f"{key} x{n}" for key, n in shown) + more


def _data_sized(contract: dict[str, Any]) -> set[str]:
    """Contract.data_sized_outputs from the manifest's JSON (that class needs pydantic)."""
    inputs, outputs = contract.get("inputs", []), contract.get("outputs", [])
    given = {d for t in inputs for d in t.get("shape", ()) if isinstance(d, str)}
    return {
        t["name"]
        for t in outputs
        if any(isinstance(d, str) and d not in given for d in t.get("shape", ()))
    }


def _use_runtime_copy(runtime_dir: Path) -> None:
    """Make `import tvm` (inside targets/tvm/runtime.py) find the carried runtime-only copy."""
    os.environ["TVM_USE_RUNTIME_LIB"] = "1"
    sys.path.insert(0, str(runtime_dir.resolve()))


def _timed(fn: Callable[[], object], sync: Callable[[], None], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t0)
    return samples


def _batch(settings: TvmSettings, feed: Feeds) -> int:
    first = settings.inputs[0]
    return int(feed[first.name].shape[0]) if first.shape and isinstance(first.shape[0], str) else 1


def _verify_artifact(
    pkg: Path,
    art: dict[str, Any],
    policy: ParityPolicy,
    samples: list[Feeds],
    refs: list[Feeds],
    labels: list[Any] | None,
    reference: _Reference,
    args: argparse.Namespace,
    scores: list[dict[str, IndexScores]] | None = None,
) -> dict[str, Any]:
    runs, warmup = args.runs, args.warmup
    bad = [f["path"] for f in art["files"] if file_sha256(pkg / f["path"]) != f["sha256"]]
    if bad:
        return {"id": art["id"], "status": "failed", "reason": f"sha256 mismatch: {bad}"}
    settings = settings_from_json(art["runtime"])
    assert isinstance(settings, TvmSettings)
    names = [t.name for t in settings.outputs]
    contract = json.loads((pkg / "manifest.json").read_text()).get("contract", {})
    judged, total = _fitting(settings, samples), len(samples)
    if not judged:
        return {
            "id": art["id"],
            "precision": art["precision"],
            "status": "failed",
            "reason": f"built static for {_shapes(settings)}; none of the package's "
            f"{len(samples)} reference samples has that shape ({_sample_shapes(samples)}), so "
            "it cannot run the model's own data: set the dims to the data's sizes "
            "(--set dims.NAME.opt=SIZE) and build again",
        }
    if len(judged) < len(samples):
        samples, refs = [samples[i] for i in judged], [refs[i] for i in judged]
        labels = [labels[i] for i in judged] if labels is not None else None
        scores = [scores[i] for i in judged] if scores is not None else None
    loaded = tvm_runtime.load(pkg / art["directory"], settings, names)
    try:
        outs = [loaded.run(feed) for feed in samples]
        _, per_output = compare_outputs(
            outs,
            refs,
            lambda name: policy.tolerance(art["precision"], name),
            {o["name"]: o.get("kind") for o in contract.get("outputs", [])},
            scores,
        )
        task = score_task(policy.task, outs, refs, labels) if policy.task else None
        ok, basis = verdict(per_output, task, art["precision"], _data_sized(contract))
        resident = loaded.resident_call(samples[0])
        for _ in range(warmup):
            resident()
        loaded.sync()
        device_s = _timed(resident, loaded.sync, runs)  # inputs on the device: kernels + launch
        host_s = _timed(lambda: loaded.run(samples[0]), loaded.sync, runs)  # numpy in and out
        against = dict(reference.record)
        if reference.run is not None:
            ref_run = reference.run
            against |= _paired_speedup(
                lambda: loaded.run(samples[0]), loaded.sync, lambda: ref_run(samples[0])
            )
        runner = loaded.describe()
    finally:
        loaded.close()
    batch = _batch(settings, samples[0])
    return {
        "id": art["id"],
        "precision": art["precision"],
        "status": "passed" if ok else "failed",
        "basis": basis,
        # a static library is judged on the samples of its shape only (which ones: `judged`)
        "samples": {"judged": judged, "of": total},
        "parity": {name: dataclasses.asdict(p) for name, p in per_output.items()},
        "task": dataclasses.asdict(task) if task is not None else None,
        "against_reference": against,
        "runner": runner,
        "latency": {
            "runs": runs,
            "warmup": warmup,
            "batch": batch,
            "input_shapes": {k: list(v.shape) for k, v in samples[0].items()},
            "device_resident": dataclasses.asdict(summarize(device_s, batch)),
            "host_to_host": dataclasses.asdict(summarize(host_s, batch)),
            "sync": "tvm Device.sync() after every call",
        },
    }


def _runtime_record(results: list[dict[str, Any]]) -> dict[str, Any]:
    runner = next((r["runner"] for r in results if "runner" in r), None)
    if runner is None:
        return {}
    return {
        "tvm": str(runner["runtime"]).removeprefix("tvm "),
        "runtime_only": bool(runner["runtime_only"]),
    }


def verify(args: argparse.Namespace) -> int:
    pkg = Path(args.package)
    manifest = json.loads((pkg / "manifest.json").read_text())
    if manifest.get("schema_version") != MANIFEST_SCHEMA:
        print(
            f"{pkg}: manifest schema {manifest.get('schema_version')}, this script reads "
            f"{MANIFEST_SCHEMA}; re-save it with this compile-pkg (compile-pkg verify migrates it)",
            file=sys.stderr,
        )
        return 2
    arts = [
        a
        for a in manifest["artifacts"]
        if a["backend"] == "tvm"
        and a["target"] == args.target
        and a["status"] == "built"
        and (not args.artifact or a["id"] in args.artifact)
    ]
    if not arts:
        print(f"{pkg}: no built {args.target}/tvm artifacts to verify", file=sys.stderr)
        return 2
    _use_runtime_copy(Path(args.tvm_runtime))
    policy = ParityPolicy.from_json(manifest["policy"]["parity"])
    samples = read_feeds_npz(pkg / "reference" / "inputs.npz")
    refs = read_feeds_npz(pkg / "reference" / "outputs.npz")
    labels = read_labels(pkg / "reference" / "labels.json") if policy.task else None
    scores = read_scores(pkg / "reference")  # behind index outputs, where it has them
    reference = _reference(pkg)
    results = []
    for art in arts:
        try:
            results.append(
                _verify_artifact(pkg, art, policy, samples, refs, labels, reference, args, scores)
            )
        except Exception as exc:  # record the failure; other artifacts still get verified
            reason = f"{type(exc).__name__}: {exc}"[:800]
            # no verdict on the artifact: it could not run here (a missing driver, a crash)
            results.append({"id": art["id"], "status": "error", "reason": reason})
    record = {
        "schema": SCHEMA,
        "package": {"path": str(pkg), "core_sha256": manifest.get("core_sha256", "")},
        "gpu": _gpu_info() if args.target == "gpu" else {},
        "device": args.target,
        "reference": reference.record,
        "host": {
            "cpu": _cpu_info(),
            "hostname": platform.node(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        # the host in compile-pkg's HostInfo shape (compile-pkg verify --gpu-record reads it)
        "measured_on": _measured_on(args.target, results),
        "runtime": _runtime_record(results),
        "artifacts": results,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, sort_keys=True))
    for r in results:
        p50 = r.get("latency", {}).get("device_resident", {}).get("p50_ms", float("nan"))
        speedup = r.get("against_reference", {}).get("speedup")
        versus = (
            f"; {speedup['estimate']:.2f}x [{speedup['low']:.2f}-{speedup['high']:.2f}] the "
            "reference on this host's CPU"
            if speedup
            else ""
        )
        print(f"{r['id']}: {r['status']} {r.get('reason', '')} p50 {p50:.3f} ms{versus}")
    return 0 if all(r["status"] == "passed" for r in results) else 1


def pack_runtime(args: argparse.Namespace) -> int:
    return pack_main([args.out], Path(args.wheels) if args.wheels else None)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("pack-runtime", help="assemble the runtime-only TVM copy (build host)")
    pr.add_argument("out", nargs="?", default="build/tvm_runtime")
    pr.add_argument(
        "--wheels",
        help="a folder of another CPython's wheels of apache-tvm, apache-tvm-ffi, ml_dtypes and "
        "typing_extensions to pack from (targets/tvm/runtime_pack.py)",
    )
    pr.set_defaults(func=pack_runtime)
    v = sub.add_parser("verify", help="verify gpu/tvm-* artifacts of a package (GPU host)")
    v.add_argument("package")
    v.add_argument("--tvm-runtime", default="build/tvm_runtime")
    v.add_argument("--out", default="gpu_verification.json")
    v.add_argument(
        "--artifact", action="append", help="artifact id, e.g. gpu/tvm-fp16 (repeatable)"
    )
    v.add_argument("--runs", type=int, default=200)
    v.add_argument("--warmup", type=int, default=20)
    v.add_argument(
        "--target",
        choices=["gpu", "cpu"],
        default="gpu",
        help="cpu: check this script on a cpu/tvm-* artifact where no GPU is at hand",
    )
    v.set_defaults(func=verify)
    args = p.parse_args()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
