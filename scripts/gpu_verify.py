#!/usr/bin/env python3
"""Verify a package's TVM gpu artifacts on an NVIDIA GPU host that has no TVM installed.

Two steps, on two machines:

  here (build host, TVM installed):
      python scripts/gpu_verify.py pack-runtime build/tvm_runtime      # ~22 MB runtime-only TVM
  there (GPU host: NVIDIA driver, Python 3.11, numpy; no TVM, no compiler):
      python scripts/gpu_verify.py verify PACKAGE --tvm-runtime build/tvm_runtime \
          --out PACKAGE/reports/gpu_verification.json

`verify` loads every built gpu/tvm-* artifact with the runtime-only TVM (TVM_USE_RUNTIME_LIB=1),
checks the files' sha256 against manifest.json, compares outputs with the fp32 reference in
reference/outputs.npz, times it CUDA-synchronized (warm-up, then p50/p99), and writes one
JSON record naming the GPU. It needs only numpy besides the carried TVM copy, and exits
non-zero when an artifact fails parity or cannot run.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# Parity tolerances per artifact precision, against the fp32 ONNX Runtime reference.
TOLERANCE = {"fp32": {"atol": 1e-3, "rtol": 1e-3}, "fp16": {"atol": 2e-2, "rtol": 2e-2}}
SCHEMA = "compile-pkg.gpu-verification.v1"


def _unpack(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """reference/*.npz keys are '<sample index>.<tensor name>'."""
    feeds: dict[int, dict[str, np.ndarray]] = {}
    for key, arr in arrays.items():
        idx, _, name = key.partition(".")
        feeds.setdefault(int(idx), {})[name] = arr
    return [feeds[i] for i in sorted(feeds)]


def _npz(path: Path) -> list[dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as z:
        return _unpack({k: z[k] for k in z.files})


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _gpu_info() -> dict[str, Any]:
    info: dict[str, Any] = {}
    smi = shutil.which("nvidia-smi")
    if smi:
        q = "name,compute_cap,driver_version,memory.total,clocks.max.sm"
        out = (
            subprocess.run(
                [smi, f"--query-gpu={q}", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            .stdout.strip()
            .splitlines()
        )
        if out:
            keys = ["name", "compute_capability", "driver", "memory_mib", "max_sm_clock_mhz"]
            info = dict(zip(keys, (v.strip() for v in out[0].split(",")), strict=False))
    return info


def _load_tvm(runtime_dir: Path, cuda: bool) -> Any:
    os.environ["TVM_USE_RUNTIME_LIB"] = "1"
    sys.path.insert(0, str(runtime_dir.resolve()))
    import tvm

    lib_dir = Path(tvm.base._LOADED_LIBS["tvm_runtime"]._name).resolve().parent
    if cuda and tvm.get_global_func("device_api.cuda", allow_missing=True) is None:
        try:
            ctypes.CDLL(str(lib_dir / "libtvm_runtime_cuda.so"), mode=ctypes.RTLD_LOCAL)
        except OSError as exc:
            raise SystemExit(
                f"cannot load TVM's CUDA runtime {lib_dir / 'libtvm_runtime_cuda.so'}: {exc}; "
                "this needs the NVIDIA driver (libcuda.so.1) and libcudart.so.13 beside it "
                "(pack-runtime copies it from the build host's CUDA toolkit)"
            ) from None
    return tvm


def _compare(got: np.ndarray, ref: np.ndarray, tol: dict[str, float]) -> dict[str, Any]:
    g, r = got.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    err = np.abs(g - r)
    cos = float(g @ r / (np.linalg.norm(g) * np.linalg.norm(r) or 1.0))
    out = {
        "max_abs_err": float(err.max(initial=0.0)),
        "mean_abs_err": float(err.mean()) if err.size else 0.0,
        "cosine": cos,
        "within_tolerance": bool(np.all(err <= tol["atol"] + tol["rtol"] * np.abs(r))),
    }
    if ref.ndim == 2 and ref.shape[1] > 1:
        out["top1_agreement"] = float((got.argmax(1) == ref.argmax(1)).mean())
    return out


def _verify_artifact(
    tvm: Any,
    dev: Any,
    pkg: Path,
    art: dict[str, Any],
    samples: list[dict[str, np.ndarray]],
    refs: list[dict[str, np.ndarray]],
    runs: int,
    warmup: int,
) -> dict[str, Any]:
    from tvm.runtime.vm import VirtualMachine

    rt = art["runtime"]
    folder = pkg / art["directory"]
    bad = [f["path"] for f in art["files"] if _sha256(pkg / f["path"]) != f["sha256"]]
    if bad:
        return {"id": art["id"], "status": "failed", "reason": f"sha256 mismatch: {bad}"}
    vm = VirtualMachine(tvm.runtime.load_module(str(folder / rt["library"])), dev)
    fn = vm[rt["entry"]]
    tol = TOLERANCE.get(art["precision"], TOLERANCE["fp16"])
    names = [o["name"] for o in rt["outputs"]]
    parity: list[dict[str, Any]] = []
    for i, (feed, ref) in enumerate(zip(samples, refs, strict=True)):
        args = [
            tvm.runtime.tensor(np.ascontiguousarray(feed[s["name"]]), dev) for s in rt["inputs"]
        ]
        res = fn(*args)
        outs = [res] if isinstance(res, tvm.runtime.Tensor) else list(res)
        for name, value in zip(names, outs, strict=True):
            parity.append({"sample": i, "output": name, **_compare(value.numpy(), ref[name], tol)})
    args = [
        tvm.runtime.tensor(np.ascontiguousarray(samples[0][s["name"]]), dev) for s in rt["inputs"]
    ]
    for _ in range(warmup):
        fn(*args)
    dev.sync()
    device_ms, e2e_ms = [], []
    for _ in range(runs):  # inputs resident on the GPU: kernel time plus launch overhead
        t0 = time.perf_counter()
        fn(*args)
        dev.sync()
        device_ms.append((time.perf_counter() - t0) * 1e3)
    host = [np.ascontiguousarray(samples[0][s["name"]]) for s in rt["inputs"]]
    for _ in range(runs):  # numpy in, numpy out: what a caller sees
        t0 = time.perf_counter()
        res = fn(*[tvm.runtime.tensor(a, dev) for a in host])
        _ = [o.numpy() for o in ([res] if isinstance(res, tvm.runtime.Tensor) else list(res))]
        e2e_ms.append((time.perf_counter() - t0) * 1e3)

    def stats(ms: list[float]) -> dict[str, float]:
        a = np.asarray(ms)
        return {
            "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(a.mean()),
            "min_ms": float(a.min()),
        }

    ok = all(p["within_tolerance"] for p in parity)
    return {
        "id": art["id"],
        "precision": art["precision"],
        "status": "passed" if ok else "failed",
        "tolerance": tol,
        "parity": parity,
        "latency": {
            "runs": runs,
            "warmup": warmup,
            "batch_input_shapes": {k: list(v.shape) for k, v in samples[0].items()},
            "device_resident": stats(device_ms),
            "host_to_host": stats(e2e_ms),
            "sync": "tvm Device.sync() after every call",
        },
    }


def verify(args: argparse.Namespace) -> int:
    pkg = Path(args.package)
    manifest = json.loads((pkg / "manifest.json").read_text())
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
    tvm = _load_tvm(Path(args.tvm_runtime), cuda=args.target == "gpu")
    dev = tvm.cuda(0) if args.target == "gpu" else tvm.cpu(0)
    if not dev.exist:
        print("TVM sees no CUDA device on this host", file=sys.stderr)
        return 2
    samples = _npz(pkg / "reference" / "inputs.npz")
    refs = _npz(pkg / "reference" / "outputs.npz")
    results = []
    for art in arts:
        try:
            results.append(
                _verify_artifact(tvm, dev, pkg, art, samples, refs, args.runs, args.warmup)
            )
        except Exception as exc:  # record the failure; other artifacts still get verified
            results.append(
                {
                    "id": art["id"],
                    "status": "failed",
                    "reason": f"{type(exc).__name__}: {exc}"[:800],
                }
            )
    record = {
        "schema": SCHEMA,
        "package": {"path": str(pkg), "core_sha256": manifest.get("core_sha256", "")},
        "gpu": {
            **_gpu_info(),
            "tvm_device_name": dev.device_name,
            "tvm_compute_version": dev.compute_version,
        }
        if args.target == "gpu"
        else {},
        "device": args.target,
        "host": {
            "hostname": platform.node(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "runtime": {
            "tvm": getattr(tvm, "__version__", "unknown"),
            "runtime_only": bool(tvm.base._RUNTIME_ONLY),
        },
        "artifacts": results,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, sort_keys=True))
    for r in results:
        lat = r.get("latency", {}).get("device_resident", {})
        print(
            f"{r['id']}: {r['status']} {r.get('reason', '')} p50 {lat.get('p50_ms', float('nan')):.3f} ms"
        )
    return 0 if all(r["status"] == "passed" for r in results) else 1


def pack_runtime(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from targets.tvm.runtime_pack import main

    return main([args.out])


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
