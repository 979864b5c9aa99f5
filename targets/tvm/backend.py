"""Apache TVM (Relax) backend: native shared libraries for `cpu`, `arm` and `gpu`.

`cpu` is LLVM x86-64 code (generic by default, or tuned for a named `mcpu`), `arm` is LLVM
aarch64 code with NEON cross-linked by aarch64-linux-gnu-gcc, `gpu` is CUDA compiled ahead
of time by nvcc into one fatbin with SASS per listed arch. The build runs in a child
process (targets/tvm/_worker.py); serving only needs TVM's runtime library
(targets/tvm/runtime.py).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from compiler.core.contract import Contract, DimRange
from compiler.core.errors import BuildError, ConfigError, NotApplicable
from compiler.core.files import default_cache_root
from compiler.core.host import Requirements
from compiler.core.settings import TvmSettings, settings_from_json
from targets.base import Availability, Backend, BackendOptions, BuildRequest, BuildResult
from targets.tvm.runtime import INSTALL

__all__ = ["TvmBackend", "TvmOptions", "default_cache_dir"]

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_ARCH = {"cpu": "x86_64", "arm": "aarch64", "gpu": "x86_64"}
# What each target needs on the build host besides tvm: (executable, how to get it).
_TOOLS: dict[str, list[tuple[str, str]]] = {
    "cpu": [],
    "arm": [("aarch64-linux-gnu-gcc", "apt-get install gcc-aarch64-linux-gnu")],
    "gpu": [("nvcc", "install the CUDA toolkit (nvcc on PATH)")],
}


class TvmOptions(BackendOptions):
    """The `compile:` block of a tvm variant."""

    backend: Literal["tvm"] = "tvm"
    # auto: symbolic dims stay dynamic (bounded by their max); static at opt shapes if that fails
    shapes: Literal["auto", "dynamic", "static"] = "auto"
    mcpu: str = Field(
        default="", description="LLVM CPU name; '' = generic x86-64 / generic aarch64"
    )
    mattr: tuple[str, ...] = Field(
        default=(), description="extra LLVM features, e.g. +avx2 or +dotprod"
    )
    cuda_archs: tuple[str, ...] = ("sm_80", "sm_86", "sm_89", "sm_90")
    tuning_trials: int = Field(
        default=0, ge=0, description="MetaSchedule trials (cpu only); 0 = off"
    )
    tuning_seconds: float = Field(
        default=900.0, ge=0, description="wall-clock cap on tuning; 0 = none"
    )
    build_timeout_s: int = Field(default=3600, gt=0)
    min_runtime_version: str = "0.27"

    @field_validator("mcpu")
    @classmethod
    def _no_native(cls, v: str) -> str:
        if v in ("native", "host"):
            raise ValueError(
                f"mcpu '{v}' is not supported (TVM ignores it); name the CPU, e.g. the build "
                "host's: python -c 'import tvm; print(tvm.target.codegen.llvm_get_system_cpu())'"
            )
        return v

    @field_validator("cuda_archs")
    @classmethod
    def _archs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("cuda_archs is empty; list at least one, e.g. [sm_80]")
        for arch in v:
            if not re.fullmatch(r"sm_(\d+)", arch) or int(arch[3:]) < 75:
                raise ValueError(f"cuda arch '{arch}': expected sm_NN with NN >= 75 (nvcc 13)")
        return tuple(sorted(set(v), key=lambda a: int(a[3:])))


def default_cache_dir(root: Path | None = None) -> Path:
    """Where tuning databases and the libcuda.so.1 stand-in live (never inside artifacts):
    `tvm/` in the build's cache folder (`BuildRequest.cache_root`), else in the default one."""
    return (root or default_cache_root()) / "tvm"


@functools.lru_cache(maxsize=1)
def _tool_versions() -> dict[str, str]:
    out = {}
    for tool, flag in (("nvcc", "--version"), ("aarch64-linux-gnu-gcc", "-dumpfullversion")):
        exe = shutil.which(tool)
        if exe:
            text = subprocess.run([exe, flag], capture_output=True, text=True).stdout.strip()
            out[tool] = text.splitlines()[-1] if text else "unknown"
    return out


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _tvm_dir() -> Path | None:
    """The installed tvm package folder, found without importing it."""
    try:
        spec = importlib.util.find_spec("tvm")
    except (ImportError, ValueError):  # ValueError: sys.modules["tvm"] is None
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _digest(model_path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in model_path.parent.iterdir() if p.is_file()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


class TvmBackend(Backend):
    name = "tvm"
    version = "12"  # 2: fp16 convolutions and matrix products sum in float32; 3: names that
    # are not C identifiers are renamed for TVM (a remembered failure is not reused); 4: an
    # already-quantized source, 4-bit or 8-bit-float weights and forms the frontend does not
    # implement are not applicable; 5: ONNX's own Attention (opset 23) is unsupported; 6:
    # antialiased downsampling Resizes, whose antialias TVM ignores, are not applicable; 7:
    # Resizes by scales that do not land on whole sizes too; 8: half_pixel RoiAlign and
    # ConvTranspose with output_shape too; 9: Resizes keeping the aspect ratio, one-sided IsInf
    # too; 10: a Resize's empty roi and scales are left out (the frontend refused them); 11:
    # a Pow's integer exponent is cast to its float base's type, a MaxPool's unread Indices
    # output left out (both refused), a shape cast to int64 where TVM takes none, a OneHot's
    # float64 cast to its values' type; a graph in order is not noted as out of order; a
    # strided SAME_LOWER MaxPool is not applicable; 12: a Slice's bounds and a Where's
    # condition do not make a shape (GPT-2's masked scores were cast to int64); Resize's
    # half_pixel_symmetric is not applicable
    targets = frozenset({"cpu", "arm", "gpu"})
    options_cls = TvmOptions

    @classmethod
    def availability(cls, target: str) -> Availability:
        if target not in cls.targets:
            return Availability(ok=False, reason=f"no tvm artifact for target '{target}'")
        tvm_dir = _tvm_dir()
        if tvm_dir is None:
            return Availability(ok=False, reason="apache-tvm is not installed", install=INSTALL)
        for tool, install in _TOOLS[target]:
            if shutil.which(tool) is None:
                return Availability(ok=False, reason=f"{tool} not found on PATH", install=install)
        if target == "gpu":
            lib = tvm_dir / "lib" / "libtvm_runtime_cuda.so"
            if not lib.is_file():
                return Availability(
                    ok=False,
                    reason=f"this tvm has no CUDA runtime ({lib} missing)",
                    install=INSTALL,
                )
        return Availability(ok=True)

    @classmethod
    def runtime_availability(cls) -> Availability:
        if _tvm_dir() is None:
            return Availability(ok=False, reason="apache-tvm is not installed", install=INSTALL)
        return Availability(ok=True)

    @classmethod
    def library_versions(cls) -> dict[str, str]:
        return {
            "apache-tvm": _dist_version("apache-tvm"),
            "apache-tvm-ffi": _dist_version("apache-tvm-ffi"),
            **_tool_versions(),
        }

    def build(self, model_path: Path, request: BuildRequest, out_dir: Path) -> BuildResult:
        opts = request.options
        assert isinstance(opts, TvmOptions)
        contract = request.contract
        req = {
            "model": str(model_path),
            "model_digest": _digest(model_path),
            "target": request.target,
            "precision": request.precision,
            "options": opts.model_dump(mode="json"),
            "inputs": [s.model_dump() for s in contract.inputs],
            "outputs": [s.model_dump() for s in contract.outputs],
            "dims": {k: v.model_dump() for k, v in contract.dims.items()},
            "out_dir": str(out_dir),
            "cache_dir": str(default_cache_dir(request.cache_root)),
        }
        for name in {d for s in contract.inputs for d in s.shape if isinstance(d, str)}:
            if name not in contract.dims:
                raise ConfigError(
                    f"tvm build of {model_path.name}: symbolic dim '{name}' has no range; "
                    f"give it one in the config (dims: {{{name}: {{min: .., opt: .., max: ..}}}})"
                )
        payload = _run_worker(req, request.workdir, opts.build_timeout_s, model_path.name)
        runtime = settings_from_json({**payload["runtime"], "backend": "tvm"})
        assert isinstance(runtime, TvmSettings)
        return BuildResult(
            files=payload["files"],
            runtime=runtime,
            contract=fixed_shape_contract(contract, runtime),
            requirements=Requirements(
                arch=_ARCH[request.target],
                isa=payload["isa"],
                gpu=request.target == "gpu",
                gpu_compute_capabilities=[f"{a[3:-1]}.{a[-1]}" for a in opts.cuda_archs]
                if request.target == "gpu"
                else [],
                runtime="tvm",
                min_runtime_version=opts.min_runtime_version,
            ),
            precision=request.precision,
            notes=payload["notes"],
            portable=False,
        )


def _run_worker(
    req: dict[str, Any], workdir: Path, timeout: int, model_name: str
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    request, result = workdir / "tvm_request.json", workdir / "tvm_result.json"
    request.write_text(json.dumps(req, sort_keys=True, indent=1))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env.pop("TVM_USE_RUNTIME_LIB", None)
    cmd = [sys.executable, "-m", "targets.tvm._worker", str(request), str(result)]
    try:
        proc = subprocess.run(
            cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise BuildError(
            f"tvm build of {model_name} for {req['target']} ran past {timeout} s; "
            "raise compile.build_timeout_s or build this target on a faster host"
        ) from None
    if not result.is_file():
        tail = " | ".join(proc.stderr.strip().splitlines()[-4:])
        raise BuildError(
            f"tvm build of {model_name} for {req['target']} crashed (exit {proc.returncode}): {tail}"
        )
    payload: dict[str, Any] = json.loads(result.read_text())
    if not payload["ok"] and payload.get("not_applicable"):
        raise NotApplicable(f"{model_name} -> tvm {req['target']}: {payload['error']}")
    if not payload["ok"]:
        raise BuildError(f"{model_name} -> tvm {req['target']}: {payload['error']}")
    return payload


def fixed_shape_contract(contract: Contract, runtime: TvmSettings) -> Contract | None:
    """The interface of a library built for fixed shapes: the package's contract with each
    symbolic dim the library fixed pinned to its size (None when nothing was fixed)."""
    pinned: dict[str, int] = {}
    for spec, built in zip(contract.inputs, runtime.inputs, strict=False):
        for want, got in zip(spec.shape, built.shape, strict=False):
            if isinstance(want, str) and isinstance(got, int):
                pinned[want] = got
    if not pinned:
        return None
    dims = dict(contract.dims)
    for name, size in pinned.items():
        dims[name] = DimRange(min=size, opt=size, max=size)
    return contract.model_copy(update={"dims": dims})
