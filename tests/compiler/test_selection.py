"""Selection decisions for deferred (TensorRT) artifacts, on described hosts.

The hosts are HostInfo records (what the probe would report on such a machine); nothing here
runs a backend.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.core.host import GpuInfo, HostInfo, Requirements
from compiler.core.records import MeasuredOn, ParityRecord
from compiler.serving.manifest import ArtifactEntry
from compiler.serving.selection import rank
from tests.compiler.helpers import build


@pytest.fixture
def manifest(mlp_path: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    m = build(mlp_path, tmp_path / "p", None, targets=("cpu",)).manifest
    deferred = ArtifactEntry(
        id="gpu/trt-fp16",
        target="gpu",
        variant="trt-fp16",
        backend="tensorrt",
        precision="fp16",
        status="deferred",
        directory="artifacts/gpu.trt-fp16",
        requirements=Requirements(arch="x86_64", gpu=True, runtime="tensorrt"),
    )
    m.artifacts.append(deferred)
    return m


def _host(gpu: bool, trt: bool) -> HostInfo:
    runtimes = {"onnxruntime": "1.32.0"} | ({"tensorrt": "10.16.0"} if trt else {})
    gpus = [GpuInfo(name="NVIDIA H100", compute_capability="9.0")] if gpu else []
    return HostInfo(
        arch="x86_64", cpu_model="x", cpu_count=2, isa=[], os="Linux", gpus=gpus, runtimes=runtimes
    )


def _measured(host: HostInfo) -> MeasuredOn:
    return MeasuredOn(**host.model_dump(), measured_at="2026-11-30T00:00:00Z")


def test_deferred_engine_is_tried_first_where_tensorrt_and_a_gpu_exist(manifest) -> None:  # type: ignore[no-untyped-def]
    ok, _ = rank(manifest, _host(gpu=True, trt=True))
    assert [c.id for c in ok] == ["gpu/trt-fp16", "cpu/ort-fp32"]
    assert "deferred build" in ok[0].reason


@pytest.mark.parametrize(
    ("gpu", "trt", "why"),
    [
        (False, True, "needs an NVIDIA GPU"),
        (True, False, "runtime 'tensorrt' is not importable"),
    ],
)
def test_deferred_engine_is_excluded_without_gpu_or_tensorrt(
    manifest, gpu: bool, trt: bool, why: str
) -> None:  # type: ignore[no-untyped-def]
    ok, excluded = rank(manifest, _host(gpu=gpu, trt=trt))
    assert [c.id for c in ok] == ["cpu/ort-fp32"]
    assert why in dict((c.id, c.reason) for c in excluded)["gpu/trt-fp16"]


def test_failed_parity_is_never_a_candidate(manifest) -> None:  # type: ignore[no-untyped-def]
    manifest.measurements["cpu/ort-fp32"].parity.append(
        ParityRecord(status="failed", mode="native", host=_measured(_host(gpu=False, trt=False)))
    )
    ok, excluded = rank(manifest, _host(gpu=False, trt=False), allow_unverified=True)
    assert ok == [] and "parity failed" in excluded[0].reason
