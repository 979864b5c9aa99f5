"""One TVM build, run in a child process: `python -m targets.tvm._worker REQUEST RESULT`.

A child process keeps TVM's global state (the libcuda.so.1 stand-in, the overridden CUDA
compile callback, LLVM's thread pool) and its occasional crashes away from the pipeline.
The request and result are JSON files; the result carries either the build's runtime
record or a one-line error that the parent raises as a `BuildError`.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import inspect
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from compiler.core.errors import BuildError, NotApplicable
from targets.frontend_gaps import tvm_gaps
from targets.tvm.cuda import cuda_source_markers, ensure_libcuda, fatbin_entries, have_real_driver
from targets.tvm.frontend import import_onnx, tvm_message
from targets.tvm.preflight import narrow_tensors, topological_order, unsupported_ops
from targets.tvm.tuning import tuning_database

__all__ = ["build", "main"]

LIBRARY = "model.so"
_ELF_MACHINE = {"x86_64": 62, "aarch64": 183}


def _llvm(triple: str, mcpu: str, mattr: list[str]) -> dict[str, Any]:
    target: dict[str, Any] = {"kind": "llvm", "mtriple": triple, "mcpu": mcpu}
    if mattr:
        target["mattr"] = list(mattr)
    return target


def _cpu_target(opts: dict[str, Any]) -> dict[str, Any]:
    return _llvm("x86_64-linux-gnu", opts["mcpu"] or "x86-64", opts["mattr"])


def _arm_target(opts: dict[str, Any]) -> dict[str, Any]:
    return _llvm("aarch64-linux-gnu", opts["mcpu"] or "generic", ["+neon", *opts["mattr"]])


def _gpu_target(opts: dict[str, Any]) -> dict[str, Any]:
    lowest = min(opts["cuda_archs"], key=lambda a: int(a.removeprefix("sm_")))
    return {
        "kind": "cuda",
        "arch": lowest,  # codegen for the oldest listed arch; nvcc emits SASS for each
        "max_shared_memory_per_block": 49152,
        "max_threads_per_block": 1024,
        "thread_warp_size": 32,
        "host": _llvm("x86_64-linux-gnu", "x86-64", []),
    }


# target name -> (TVM target as data, CPU arch of the shared library, linker)
TARGETS: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], str, str | None]] = {
    "cpu": (_cpu_target, "x86_64", None),
    "arm": (_arm_target, "aarch64", "aarch64-linux-gnu-gcc"),
    "gpu": (_gpu_target, "x86_64", None),
}


# LLVM feature name -> /proc/cpuinfo flag (the names compiler.core.host records).
_LLVM_TO_CPUINFO = {
    "sse4.2": "sse4_2",
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512vl": "avx512vl",
    "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16",
    "avxvnni": "avx_vnni",
    "amx-tile": "amx_tile",
    "amx-int8": "amx_int8",
    "amx-bf16": "amx_bf16",
    "neon": "asimd",
    "dotprod": "asimddp",
    "fullfp16": "asimdhp",
    "sve": "sve",
    "sve2": "sve2",
    "i8mm": "i8mm",
    "bf16": "bf16",
}


def _required_isa(target: Any) -> list[str]:
    """CPU features the generated host code may use, as /proc/cpuinfo names."""
    from tvm.target import codegen

    host = target.host if target.kind.name != "llvm" else target
    if host is None:
        return []
    features = set(codegen.llvm_get_cpu_features(host))
    return sorted({flag for f, flag in _LLVM_TO_CPUINFO.items() if f in features})


def _load_cuda_runtime(cache_dir: Path) -> None:
    """Make libtvm_runtime_cuda.so loadable before `import tvm` (see targets/tvm/cuda.py)."""
    if have_real_driver():
        return
    spec = importlib.util.find_spec("tvm")
    assert spec is not None and spec.submodule_search_locations
    lib_dir = Path(list(spec.submodule_search_locations)[0]) / "lib"
    stand_in = ensure_libcuda(cache_dir, lib_dir / "libtvm_runtime_cuda.so")
    ctypes.CDLL(str(stand_in), mode=ctypes.RTLD_GLOBAL)


def _register_fatbin_compiler(archs: list[str]) -> None:
    """Compile generated CUDA ahead of time with nvcc into one fatbin with SASS per arch."""
    import tvm_ffi
    from tvm.support import nvcc

    gencode: list[str] = []
    for arch in archs:
        num = arch.removeprefix("sm_")
        gencode += ["-gencode", f"arch=compute_{num},code=sm_{num}"]

    def _compile(code: str) -> bytearray:
        return nvcc.compile_cuda(code, target_format="fatbin", arch=gencode, compiler="nvcc")

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", _compile, override=True)


# Frames whose source context TVMScript reads (`is_defined_in_class` reads the third).
_FULL_FRAMES = 4


@contextlib.contextmanager
def _cheap_outer_frames() -> Iterator[None]:
    """`inspect.getouterframes` (and so `inspect.stack`) with source context for the innermost
    `_FULL_FRAMES` frames only (those with a source file); the others carry their frame,
    file, line and function.

    TVMScript's `@T.prim_func` calls `inspect.stack()` for every function it parses, and
    DLight's tensor-core schedule (fp16 on CUDA) imports `tvm.s_tir.tensor_intrin`, which
    parses hundreds: for each frame of a deep stack, `inspect` looks up the source file, and
    for `<frozen importlib>` frames scans every loaded module for it. That took 80 % of a
    48.7 s gpu fp16 build (torchcrepe's tiny model, py-spy, 2026-12-02) and 22 s just to
    import `tensor_intrin`. The parser uses the outer frames' locals (closure variables)
    and, for error messages, their file and line; the library it builds is the same (the
    test compares bytes)."""
    real = inspect.getouterframes

    def outer_frames(frame: FrameType | None, context: int = 1) -> list[inspect.FrameInfo]:
        frames: list[inspect.FrameInfo] = []
        while frame is not None:
            # a frozen module's frame (`<frozen importlib._bootstrap>`) has no source anyway
            if len(frames) < _FULL_FRAMES and not frame.f_code.co_filename.startswith("<"):
                info = inspect.getframeinfo(frame, context)
                frames.append(inspect.FrameInfo(frame, *info, positions=info.positions))
            else:
                code = frame.f_code
                frames.append(
                    inspect.FrameInfo(
                        frame, code.co_filename, frame.f_lineno, code.co_name, None, None
                    )
                )
            frame = frame.f_back
        return frames

    inspect.getouterframes = outer_frames  # type: ignore[assignment]
    try:
        yield
    finally:
        inspect.getouterframes = real


def _compile(mod: Any, target: Any, tuning_dir: Path | None) -> Any:
    import tvm
    from tvm import relax

    with target, _cheap_outer_frames():
        if tuning_dir is None:
            return tvm.compile(mod, target=target)
        mod = relax.transform.DecomposeOpsForInference()(mod)
        mod = relax.get_pipeline("zero")(mod)
        mod = relax.transform.MetaScheduleApplyDatabase(str(tuning_dir))(mod)
        return tvm.compile(mod, target=target)


def _tensor_specs(ty: Any, names: list[str]) -> list[dict[str, Any]]:
    types = list(ty.fields) if hasattr(ty, "fields") else [ty]
    out = []
    for name, t in zip(names, types, strict=False):
        shape = [int(v.value) if hasattr(v, "value") else str(v) for v in t.shape.values]
        out.append({"name": name, "dtype": str(t.dtype), "shape": shape})
    return out


def _export(ex: Any, path: Path, linker: str | None) -> None:
    from tvm.support import cc

    try:
        if linker is None:
            ex.export_library(str(path))
        else:
            ex.export_library(str(path), fcompile=cc.cross_compiler(linker))
    except Exception as exc:
        raise BuildError(
            f"tvm export_library ({linker or 'host compiler'}) failed: {tvm_message(exc)}"
        ) from exc


def _check_library(path: Path, arch: str, target: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Check the shared library is what it claims: ELF machine, and for CUDA a fatbin per arch."""
    data = path.read_bytes()
    machine = int.from_bytes(data[18:20], "little")
    if data[:4] != b"\x7fELF" or machine != _ELF_MACHINE[arch]:
        raise BuildError(
            f"{path.name}: expected an ELF shared library for {arch}, got machine {machine}"
        )
    if target != "gpu":
        return {}
    if markers := cuda_source_markers(data):
        raise BuildError(
            f"{path.name} holds CUDA source ({markers[0]!r}), not device code: the CUDA runtime "
            "could not be loaded at build time, so TVM skipped nvcc"
        )
    entries = fatbin_entries(data)
    have = sorted({f"sm_{e.sm}" for e in entries if e.kind == "elf"})
    missing = sorted(set(opts["cuda_archs"]) - set(have))
    if missing:
        raise BuildError(f"{path.name}: fatbin lacks SASS for {missing} (has {have})")
    return {"fatbin": [{"kind": e.kind, "sm": e.sm, "bytes": e.size} for e in entries]}


def _check_preflight(model: Any) -> None:
    why = []
    narrow = narrow_tensors(model)
    if narrow:
        listed = ", ".join(f"{t} ('{name}')" for t, name in sorted(narrow.items()))
        why.append(f"tensors of types TVM cannot read: {listed} (4-bit and 8-bit float weights)")
    why += [f"TVM's ONNX frontend {gap} (targets/frontend_gaps.py)" for gap in tvm_gaps(model)]
    bad = unsupported_ops(model)
    if bad:
        listed = ", ".join(f"{op} (node '{node}')" for op, node in sorted(bad.items()))
        why.append(f"unsupported ops: {listed}; TVM's ONNX frontend cannot import them")
    if why:
        # not applicable, not failed: nothing broke, this backend cannot take the model
        raise NotApplicable(
            "; ".join(why) + ". Use the onnxruntime or openvino artifact for this model"
        )


def build(req: dict[str, Any]) -> dict[str, Any]:
    """Import, compile, export and check one artifact; return files, runtime and notes."""
    import onnx

    opts, target_name = req["options"], req["target"]
    cache_dir = Path(req["cache_dir"])
    if target_name == "gpu":
        _load_cuda_runtime(cache_dir)
    model = onnx.load(req["model"])
    _check_preflight(model)
    notes: list[str] = []
    if topological_order(model):
        notes.append("graph nodes were not in topological order; sorted before import")

    import tvm

    if target_name == "gpu":
        if "tvm_runtime_cuda" not in tvm.base._LOADED_LIBS:
            raise BuildError(
                "libtvm_runtime_cuda.so did not load, so TVM cannot emit device code; "
                "check `ldd tvm/lib/libtvm_runtime_cuda.so` (it needs libcudart.so.13)"
            )
        _register_fatbin_compiler(opts["cuda_archs"])
    make_target, arch, linker = TARGETS[target_name]
    target_json = make_target(opts)
    target = tvm.target.Target(target_json)
    has_symbols = any(isinstance(d, str) for s in req["inputs"] for d in s["shape"])
    modes = {"auto": [True, False], "dynamic": [True], "static": [False]}[opts["shapes"]]
    tuning_dir = None
    if opts["tuning_trials"] > 0:
        if target_name == "cpu":
            target_json["num-cores"] = os.cpu_count() or 1  # MetaSchedule needs it
            target = tvm.target.Target(target_json)
        tuning_dir, note = tuning_database(req, target_json, cache_dir)
        notes.append(note)
        modes = [False]
    if not has_symbols:
        modes = [False]
    t0 = time.perf_counter()
    ex = mod = None
    for i, dynamic in enumerate(modes):
        attempt = time.perf_counter()
        try:
            mod = import_onnx(model, req, dynamic)
            ex = _compile(mod, target, tuning_dir if tuning_dir and tuning_dir.exists() else None)
            break
        except NotApplicable:
            raise  # the model, not the shapes: no other attempt takes it
        except Exception as exc:
            if i + 1 < len(modes):
                spent = time.perf_counter() - attempt
                notes.append(
                    f"dynamic shapes failed after {spent:.0f} s ({tvm_message(exc, 200)}); "
                    "built static (shapes: static skips the attempt)"
                )
                continue
            if isinstance(exc, BuildError):
                raise
            what = "dynamic" if dynamic else "static"
            raise BuildError(f"tvm compile ({what} shapes) failed: {tvm_message(exc)}") from exc
    assert ex is not None and mod is not None
    compile_s = time.perf_counter() - t0
    if req["precision"] == "fp16":
        notes.append("fp16 convolutions and matrix products sum in float32")
    out = Path(req["out_dir"]) / LIBRARY
    _export(ex, out, linker)
    checks = _check_library(out, arch, target_name, opts)
    main = mod["main"]
    inputs = _tensor_specs_params(main.params, [s["name"] for s in req["inputs"]])
    outputs = _tensor_specs(main.ret_ty, [s["name"] for s in req["outputs"]])
    dynamic_built = any(isinstance(d, str) for s in inputs for d in s["shape"])
    runtime = {
        "library": LIBRARY,
        "entry": "main",
        "device": "cuda" if target_name == "gpu" else "cpu",
        "inputs": inputs,
        "outputs": outputs,
        "shapes": "dynamic" if dynamic_built else "static",
        "target": target_json,
        "tvm_version": tvm.__version__,
        **({"cuda_archs": list(opts["cuda_archs"])} if target_name == "gpu" else {}),
    }
    return {
        "isa": _required_isa(target),
        "files": [LIBRARY],
        "runtime": runtime,
        "notes": notes,
        "timing": {
            "compile_s": round(compile_s, 2),
            "export_s": round(time.perf_counter() - t0 - compile_s, 2),
        },
        "checks": checks,
    }


def _tensor_specs_params(params: Any, names: list[str]) -> list[dict[str, Any]]:
    specs = []
    for name, p in zip(names, params, strict=False):
        specs.extend(_tensor_specs(p.ty, [name]))
    return specs


def main(argv: list[str]) -> int:
    request, result = Path(argv[0]), Path(argv[1])
    req = json.loads(request.read_text())
    try:
        payload: dict[str, Any] = {"ok": True, **build(req)}
    except NotApplicable as exc:
        payload = {"ok": False, "error": str(exc), "not_applicable": True}
    except BuildError as exc:
        payload = {"ok": False, "error": str(exc)}
    except Exception as exc:  # anything else from TVM: keep the message, log the trace
        traceback.print_exc()
        payload = {
            "ok": False,
            "error": f"tvm build failed: {type(exc).__name__}: {tvm_message(exc)}",
        }
    tmp = result.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, sort_keys=True, indent=1))
    os.replace(tmp, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
