"""TVM artifacts built once per test session (a TVM build takes tens of seconds) and shared by
the TVM test modules: the clip net for cpu (x86-64), arm (aarch64) and gpu (CUDA)."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.core.contract import Contract
from targets.base import BuildResult
from targets.tvm.backend import TvmBackend, TvmOptions
from tests.targets.builders import clip_net, request, save

Built = tuple[Path, BuildResult, Contract, Path]  # artifact dir, result, contract, model


def build_tvm(
    model_path: Path,
    target: str,
    root: Path,
    precision: str = "fp32",
    cache_root: Path | None = None,
    **options: object,
) -> Built:
    out = root / f"{target}-{precision}-out"
    out.mkdir(parents=True)
    work = root / f"{target}-{precision}-work"
    req, contract = request(
        model_path, TvmOptions(**options), work, target, precision, cache_root=cache_root
    )
    return out, TvmBackend().build(model_path, req, out), contract, model_path


@pytest.fixture(scope="session")
def tvm_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tvm")


@pytest.fixture(scope="session")
def clip_model(tvm_root: Path) -> Path:
    return save(clip_net(), tvm_root / "src")


def _built(target: str, tvm_root: Path, clip_model: Path, **options: object) -> Built:
    a = TvmBackend.availability(target)
    if not a.ok:
        pytest.skip(f"tvm {target} unavailable: {a.reason} ({a.install})")
    with pytest.MonkeyPatch.context() as mp:  # the libcuda.so.1 stand-in: out of ~/.cache
        mp.setenv("COMPILE_PKG_CACHE", str(tvm_root / "cache"))
        return build_tvm(clip_model, target, tvm_root, **options)


@pytest.fixture(scope="session")
def tvm_cpu_fp32(tvm_root: Path, clip_model: Path) -> Built:
    return _built("cpu", tvm_root, clip_model)


@pytest.fixture(scope="session")
def tvm_arm_fp32(tvm_root: Path, clip_model: Path) -> Built:
    return _built("arm", tvm_root, clip_model)


@pytest.fixture(scope="session")
def tvm_gpu_fp32(tvm_root: Path, clip_model: Path) -> Built:
    return _built("gpu", tvm_root, clip_model, cuda_archs=("sm_80", "sm_90"))
