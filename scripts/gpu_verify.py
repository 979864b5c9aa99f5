#!/usr/bin/env python3
"""Verify a package's TVM gpu artifacts on an NVIDIA GPU host that has no TVM installed.

Two steps, on two machines:

  here (build host, TVM installed):
      python scripts/gpu_verify.py pack-runtime build/tvm_runtime      # ~22 MB runtime-only TVM
  there (GPU host: NVIDIA driver, Python 3.11, numpy, this source tree; no TVM, no pydantic):
      python scripts/gpu_verify.py verify PACKAGE --tvm-runtime build/tvm_runtime \
          --out PACKAGE/reports/gpu_verification.json

`verify` loads every built gpu/tvm-* artifact with targets/tvm/runtime.py on the runtime-only
TVM (TVM_USE_RUNTIME_LIB=1), checks the files' sha256 against manifest.json (schema 2),
judges outputs against reference/outputs.npz with compiler.core.parity and the package's
recorded tolerances (`policy.parity`), times it CUDA-synchronized (warm-up, then p50/p99 with
compiler.core.latency), and writes one JSON record naming the GPU. Besides the carried TVM
copy it needs numpy and the project's bare modules (standard library and numpy only), and
exits non-zero when an artifact fails parity or cannot run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
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

from compiler.core.feeds import Feeds, read_feeds_npz  # noqa: E402
from compiler.core.hashing import file_sha256  # noqa: E402
from compiler.core.latency import summarize  # noqa: E402
from compiler.core.parity import compare_outputs  # noqa: E402
from compiler.core.settings import TvmSettings, settings_from_json  # noqa: E402
from compiler.core.tolerance import ParityPolicy  # noqa: E402
from targets.tvm import runtime as tvm_runtime  # noqa: E402
from targets.tvm.runtime_pack import main as pack_main  # noqa: E402

SCHEMA = "compile-pkg.gpu-verification.v2"
MANIFEST_SCHEMA = 2


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


def _manifest_outputs(pkg: Path) -> list[dict[str, Any]]:
    """The contract's outputs (name, kind: what parity judges each by)."""
    doc = json.loads((pkg / "manifest.json").read_text())
    return list(doc.get("contract", {}).get("outputs", []))


def _verify_artifact(
    pkg: Path,
    art: dict[str, Any],
    policy: ParityPolicy,
    samples: list[Feeds],
    refs: list[Feeds],
    runs: int,
    warmup: int,
) -> dict[str, Any]:
    bad = [f["path"] for f in art["files"] if file_sha256(pkg / f["path"]) != f["sha256"]]
    if bad:
        return {"id": art["id"], "status": "failed", "reason": f"sha256 mismatch: {bad}"}
    settings = settings_from_json(art["runtime"])
    assert isinstance(settings, TvmSettings)
    names = [t.name for t in settings.outputs]
    loaded = tvm_runtime.load(pkg / art["directory"], settings, names)
    try:
        outs = [loaded.run(feed) for feed in samples]
        ok, per_output = compare_outputs(
            outs,
            refs,
            lambda name: policy.tolerance(art["precision"], name),
            {o["name"]: o.get("kind") for o in _manifest_outputs(pkg)},
        )
        resident = loaded.resident_call(samples[0])
        for _ in range(warmup):
            resident()
        loaded.sync()
        device_s = _timed(resident, loaded.sync, runs)  # inputs on the device: kernels + launch
        host_s = _timed(lambda: loaded.run(samples[0]), loaded.sync, runs)  # numpy in and out
        runner = loaded.describe()
    finally:
        loaded.close()
    batch = _batch(settings, samples[0])
    return {
        "id": art["id"],
        "precision": art["precision"],
        "status": "passed" if ok else "failed",
        "parity": {name: dataclasses.asdict(p) for name, p in per_output.items()},
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
    results = []
    for art in arts:
        try:
            results.append(
                _verify_artifact(pkg, art, policy, samples, refs, args.runs, args.warmup)
            )
        except Exception as exc:  # record the failure; other artifacts still get verified
            reason = f"{type(exc).__name__}: {exc}"[:800]
            results.append({"id": art["id"], "status": "failed", "reason": reason})
    record = {
        "schema": SCHEMA,
        "package": {"path": str(pkg), "core_sha256": manifest.get("core_sha256", "")},
        "gpu": _gpu_info() if args.target == "gpu" else {},
        "device": args.target,
        "host": {
            "hostname": platform.node(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "runtime": _runtime_record(results),
        "artifacts": results,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, sort_keys=True))
    for r in results:
        p50 = r.get("latency", {}).get("device_resident", {}).get("p50_ms", float("nan"))
        print(f"{r['id']}: {r['status']} {r.get('reason', '')} p50 {p50:.3f} ms")
    return 0 if all(r["status"] == "passed" for r in results) else 1


def pack_runtime(args: argparse.Namespace) -> int:
    return pack_main([args.out])


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("pack-runtime", help="assemble the runtime-only TVM copy (build host)")
    pr.add_argument("out", nargs="?", default="build/tvm_runtime")
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
