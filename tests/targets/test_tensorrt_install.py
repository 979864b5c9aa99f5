"""What runs without TensorRT on a host: install advice per driver CUDA version, the driver
probe on a host without a driver, the installed-TensorRT probe over every distribution name
NVIDIA publishes, the GPU this process uses under CUDA_VISIBLE_DEVICES, the engine digest
check, and the cross-process build lock (two real processes)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from compiler.core.errors import BackendUnavailable, IntegrityError
from compiler.core.host import GpuInfo, _smi_row, mig_devices, probe_host, visible_gpus
from compiler.core.settings import settings_to_json
from targets.tensorrt.cache import EngineCache, engine_cache_key, read_engine
from targets.tensorrt.compat import check_compatibility, resolve_tensorrt_version, tensorrt_flavour
from targets.tensorrt.engine import build_from_spec, serving_settings
from targets.tensorrt.install import (
    DriverInfo,
    advice_for_driver,
    cuda_flavour,
    cudart_wheel_dir,
    expose_cudart,
    find_tensorrt,
    install_advice,
    pick_tensorrt,
    probe_driver,
)
from targets.tensorrt.options import TensorRTOptions, builder_settings
from targets.tensorrt.startup import hardware_level, start_tensorrt
from tests.models import tiny_mlp
from tests.targets.tensorrt_data import H100, build, host, mlp_contract, record

# ------------------------------------------------------------------------- install advice


@pytest.mark.parametrize(
    ("cuda", "extra", "cuda_python"),
    [
        ((13, 0), "tensorrt-cu13", "cuda-python>=13,<14"),
        ((13, 1), "tensorrt-cu13", "cuda-python>=13,<14"),
        ((14, 0), "tensorrt-cu13", "cuda-python>=13,<14"),  # a newer driver runs older CUDA
        ((12, 2), "tensorrt-cu12", "cuda-python>=12.6,<13"),
        ((12, 9), "tensorrt-cu12", "cuda-python>=12.6,<13"),
        ((11, 8), None, ""),
        (None, None, ""),
    ],
)
def test_advice_per_driver_cuda_version(
    cuda: tuple[int, int] | None, extra: str | None, cuda_python: str
) -> None:
    a = advice_for_driver(cuda)
    assert a.extra == extra and a.cuda_python == cuda_python
    if extra:
        assert a.pip == f"pip install 'compile-pkg[{extra}]'"
        assert f"CUDA {cuda[0]}.{cuda[1]}" in a.reason  # type: ignore[index]
    elif cuda is None:
        assert "no NVIDIA driver" in a.reason and "install the NVIDIA driver" in a.pip
    else:
        assert "upgrade the NVIDIA driver to R525" in a.pip and "11.8" in a.reason


def test_driver_probe_without_a_driver_says_so() -> None:
    d = probe_driver(["libnvidia-ml-that-does-not-exist.so.1"])
    assert d.cuda is None and d.problem.startswith("no NVIDIA driver")
    assert "no NVIDIA driver" in install_advice(d)
    here = probe_driver()  # this host: whatever it has, the probe returns, never raises
    assert (here.cuda is None) == bool(here.problem)
    assert "cu13" in install_advice(DriverInfo(driver="580.65", cuda=(13, 0)))


# ----------------------------------------------------------------- installed TensorRT


@pytest.mark.parametrize(
    ("name", "flavour"),
    [
        ("tensorrt-cu12", "cu12"),
        ("tensorrt_cu13_bindings", "cu13"),
        ("tensorrt-cu11-libs", "cu11"),
        ("tensorrt_lean_cu12", "cu12"),
        ("tensorrt-lean-cu12", "cu12"),
        ("tensorrt", ""),
        ("tensorrt-llm", ""),
    ],
)
def test_cuda_flavour_from_distribution_name(name: str, flavour: str) -> None:
    assert cuda_flavour(name) == flavour


def test_pick_tensorrt_prefers_a_name_with_a_cuda_major() -> None:
    got = pick_tensorrt({"tensorrt": "10.16.1.11", "tensorrt_cu12": "10.16.1.11",
                         "tensorrt_cu12_libs": "10.16.1.11", "numpy": "2.0"})  # fmt: skip
    assert got is not None and (got.version, got.cuda) == ("10.16.1.11", "cu12")
    assert got.distribution == "tensorrt-cu12"
    cu11 = pick_tensorrt({"tensorrt-cu11": "10.0.1.6"})
    assert cu11 is not None and (cu11.version, cu11.cuda) == ("10.0.1.6", "cu11")
    bare = pick_tensorrt({"tensorrt": "10.3.0"})
    assert bare is not None and (bare.version, bare.cuda) == ("10.3.0", "")
    assert pick_tensorrt({"tensorrt-llm": "0.9"}) is None and pick_tensorrt({}) is None


def _dist_info(site: Path, name: str, version: str) -> None:
    d = site / f"{name.replace('-', '_')}-{version}.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


@pytest.mark.parametrize("flavour", ["cu11", "cu12", "cu13"])
def test_find_tensorrt_reads_installed_metadata(tmp_path: Path, flavour: str) -> None:
    """Package metadata as pip writes it for a split install (no bare `tensorrt`)."""
    _dist_info(tmp_path, f"tensorrt-{flavour}-bindings", "10.9.0.34")
    _dist_info(tmp_path, f"tensorrt-{flavour}-libs", "10.9.0.34")
    got = find_tensorrt([str(tmp_path)])
    assert got is not None and (got.version, got.cuda) == ("10.9.0.34", flavour)
    assert find_tensorrt([str(tmp_path / "empty")]) is None


def test_unknown_version_is_resolved_not_refused(tmp_path: Path) -> None:
    """A host whose probe read "unknown" gets the version from metadata; only when nothing
    says it does the version stay unknown (and then the engine check says why)."""
    _dist_info(tmp_path, "tensorrt-cu11", "10.0.1.6")
    resolved = resolve_tensorrt_version(host(trt="unknown"), [str(tmp_path)])
    assert resolved.runtimes["tensorrt"] == "10.0.1.6"
    same = host(trt="10.16.1.11")
    assert resolve_tensorrt_version(same, [str(tmp_path)]) is same
    still = resolve_tensorrt_version(host(trt="unknown"), [str(tmp_path / "none")])
    assert still.runtimes["tensorrt"] == "unknown"


# -------------------------------------------------------------------------- GPU identity

_A = GpuInfo(name="NVIDIA A100-SXM4-80GB", compute_capability="8.0", uuid="GPU-aaaa1111", index=0)
_H = GpuInfo(name="NVIDIA H100 80GB HBM3", compute_capability="9.0", uuid="GPU-bbbb2222", index=1)
_L = GpuInfo(name="NVIDIA L4", compute_capability="8.9", uuid="GPU-cccc3333", index=2)
_ALL = [_A, _H, _L]  # nvidia-smi order (PCI bus)


@pytest.mark.parametrize(
    ("env", "order", "want"),
    [
        (None, "PCI_BUS_ID", [_A, _H, _L]),
        ("1", "PCI_BUS_ID", [_H]),
        ("2,0", "PCI_BUS_ID", [_L, _A]),
        ("GPU-cccc3333,GPU-aaaa", "PCI_BUS_ID", [_L, _A]),  # full UUID, then a unique prefix
        ("0,7,1", "PCI_BUS_ID", [_A]),  # the list ends at the first invalid entry
        ("1,1", "PCI_BUS_ID", [_H]),
        ("GPU-", "PCI_BUS_ID", []),  # an ambiguous prefix names no GPU
        ("", "PCI_BUS_ID", []),
        ("-1", "PCI_BUS_ID", []),
        (None, "", [_H, _L, _A]),  # CUDA's default order: fastest first
        ("0", "FASTEST_FIRST", [_H]),
        ("GPU-aaaa1111", "", [_A]),  # UUIDs do not depend on the order
    ],
)
def test_visible_gpus_follow_cuda_visible_devices(
    env: str | None, order: str, want: list[GpuInfo]
) -> None:
    assert visible_gpus(_ALL, env, order) == want


# `nvidia-smi -L` on an A100 split into MIG instances (R470+ UUIDs), then an H100 unsplit
_LISTING = """\
GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-aaaa1111)
  MIG 3g.40gb     Device  0: (UUID: MIG-1d2c3b4a-0000-5e6f-8a9b-0c1d2e3f4a5b)
  MIG 1g.10gb     Device  1: (UUID: MIG-9f8e7d6c-1111-5a4b-9c8d-7e6f5a4b3c2d)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb2222)
"""


def test_mig_instances_named_by_cuda_visible_devices() -> None:
    """A MIG slice is what most shared H100/A100 hosts hand out: CUDA_VISIBLE_DEVICES names
    it by its MIG- UUID, which `--query-gpu` does not list; it is its GPU's architecture
    with the slice's memory."""
    migs = mig_devices(_LISTING, _ALL)
    assert [m.name for m in migs] == [
        "NVIDIA A100-SXM4-80GB MIG 3g.40gb",
        "NVIDIA A100-SXM4-80GB MIG 1g.10gb",
    ]
    (small,) = visible_gpus(_ALL, "MIG-9f8e7d6c", "PCI_BUS_ID", migs)  # a unique prefix
    assert (small.compute_capability, small.memory_mib, small.index) == ("8.0", 10240, 0)
    assert small.uuid == "MIG-9f8e7d6c-1111-5a4b-9c8d-7e6f5a4b3c2d"
    both = visible_gpus(_ALL, "MIG-1d2c,MIG-9f8e", "PCI_BUS_ID", migs)
    assert [g.memory_mib for g in both] == [40960, 10240]
    assert visible_gpus(_ALL, "MIG-", "PCI_BUS_ID", migs) == []  # ambiguous: no device
    assert visible_gpus(_ALL, "MIG-0000", "PCI_BUS_ID", migs) == []  # not on this host
    assert visible_gpus(_ALL, "MIG-9f8e7d6c", "PCI_BUS_ID") == []  # no listing: no device


def test_nvidia_smi_rows_and_what_records_keep() -> None:
    row = _smi_row("1, GPU-bbbb2222, NVIDIA H100 80GB HBM3, 9.0, 580.65.06, 81559")
    assert row is not None and row.index == 1 and row.uuid == "GPU-bbbb2222"
    assert (row.name, row.compute_capability, row.memory_mib) == (_H.name, "9.0", 81559)
    assert _smi_row("garbage") is None
    assert "uuid" not in row.model_dump()  # records never name the physical board


def test_cache_key_names_the_visible_gpu_and_cuda_flavour() -> None:
    (first,) = visible_gpus(_ALL, "2", "PCI_BUS_ID")
    key = engine_cache_key("a" * 64, first, "10.16.1.11", "s", "cu12")
    assert key.startswith("sm89-") and key != engine_cache_key("a" * 64, _A, "10.16.1.11", "s")
    assert key != engine_cache_key("a" * 64, first, "10.16.1.11", "s", "cu13")


def test_cuda_runtime_of_the_tensorrt_wheel_is_found_for_its_major(tmp_path: Path) -> None:
    """CUDA 12 wheels put libcudart in nvidia/cuda_runtime/lib, CUDA 13 ones in nvidia/cu13/lib;
    Polygraphy's wrapper searches LD_LIBRARY_PATH first, so the folder matching TensorRT's
    CUDA major goes first there."""
    site = tmp_path / "site-packages"
    for sub, lib in [
        ("nvidia/cuda_runtime/lib", "libcudart.so.12"),
        ("nvidia/cu13/lib", "libcudart.so.13"),
    ]:
        (site / sub).mkdir(parents=True)
        (site / sub / lib).write_bytes(b"")  # the layout is what is looked up, not the library
    path = [str(tmp_path / "elsewhere"), str(site)]
    assert cudart_wheel_dir("cu12", path) == site / "nvidia/cuda_runtime/lib"
    assert cudart_wheel_dir("cu13", path) == site / "nvidia/cu13/lib"
    assert cudart_wheel_dir("cu11", path) is None and cudart_wheel_dir("", path) is None
    env = {"LD_LIBRARY_PATH": "/usr/local/cuda-12/lib64"}
    assert expose_cudart("cu13", env, path) == site / "nvidia/cu13/lib"
    assert env["LD_LIBRARY_PATH"].split(":") == [
        str(site / "nvidia/cu13/lib"),
        "/usr/local/cuda-12/lib64",
    ]
    expose_cudart("cu13", env, path)  # once only
    assert env["LD_LIBRARY_PATH"].count("cu13") == 1
    untouched: dict[str, str] = {}
    assert expose_cudart("", untouched, path) is None and untouched == {}


# ---------------------------------------------------------------- engine digest, build lock


def test_engine_digest_is_checked_before_deserialization(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    key = engine_cache_key("a" * 64, H100, "10.16.1.11")
    stored = cache.store(key, b"\x00plan-bytes", {"tensorrt_version": "10.16.1.11"})
    looked = cache.lookup(key)
    assert looked is not None and looked.sha256 == stored.sha256 and len(stored.sha256) == 64
    assert read_engine(looked.engine, looked.sha256) == b"\x00plan-bytes"
    looked.engine.write_bytes(b"\x00plan-bytez")  # whoever can write the cache directory
    with pytest.raises(IntegrityError, match="refusing to deserialize"):
        read_engine(looked.engine, looked.sha256)
    (cache.entry(key) / "engine.sha256").unlink()  # an entry without its digest is no entry
    assert cache.lookup(key) is None


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from targets.tensorrt.cache import BuildLock
    root, log, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    with BuildLock(root) as lock:
        with log.open("a") as f:
            f.write(f"enter {name}\\n")
        time.sleep(1.0)
        with log.open("a") as f:
            f.write(f"exit {name} waited={lock.waited:.2f}\\n")
    """
)


def test_build_lock_serializes_two_processes(tmp_path: Path) -> None:
    log = tmp_path / "log"
    root = Path(__file__).resolve().parents[2]

    def start(name: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-c", _HOLDER, str(tmp_path / "cache"), str(log), name]
        return subprocess.Popen(cmd, cwd=root)

    first = start("a")
    deadline = time.monotonic() + 60
    while not (log.is_file() and "enter a" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)  # b starts only once a holds the lock
    procs = [first, start("b")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    lines = log.read_text().splitlines()
    kinds = [ln.split()[0] for ln in lines]
    assert kinds == ["enter", "exit", "enter", "exit"], lines  # never both inside
    assert [ln.split()[1] for ln in lines] == ["a", "a", "b", "b"]
    assert float(lines[3].rsplit("=", 1)[1]) > 0.05  # b really waited for a to let go


def test_a_build_that_waited_for_the_lock_finds_the_engine_and_builds_nothing(
    tmp_path: Path,
) -> None:
    """Another worker holds the host's build lock and stores the engine; this one waited and
    takes it from the cache (without TensorRT: building would fail here)."""
    result, out = build(tmp_path, build="deferred")
    runtime = settings_to_json(result.runtime)
    on = host()
    key = engine_cache_key(
        runtime["onnx_sha256"], H100, "10.16.1.11", runtime["settings_digest"], tensorrt_flavour()
    )
    cache = EngineCache(tmp_path / "cache")
    got: list[Path] = []

    def worker() -> None:
        got.append(build_from_spec(out, runtime, tmp_path / "cache", on).engine)

    with cache.build_lock():
        t = threading.Thread(target=worker)
        t.start()
        t.join(0.5)
        assert t.is_alive() and got == []  # waiting for the lock
        cache.store(key, b"the other worker's engine", record().model_dump(mode="json"))
    t.join(30)
    assert got == [cache.entry(key) / "engine.plan"]


# --------------------------------------------------------------------- start-up and hosts


def test_hardware_level_is_guarded_by_the_tensorrt_version() -> None:
    assert hardware_level("10.0.1.6", "NONE") is None
    assert hardware_level("10.0.1.6", "AMPERE_PLUS") == "AMPERE_PLUS"
    assert hardware_level("10.9.0.34", "SAME_COMPUTE_CAPABILITY") == "SAME_COMPUTE_CAPABILITY"
    with pytest.raises(ValueError, match=r"SAME_COMPUTE_CAPABILITY needs TensorRT >= 10.9"):
        hardware_level("10.8.0.43", "SAME_COMPUTE_CAPABILITY")
    floor = TensorRTOptions(hardware_compatibility="same_compute_capability").runtime_floor()
    assert floor == "10.9" and TensorRTOptions().runtime_floor() == "10.0"
    assert TensorRTOptions(min_runtime_version="10.12").runtime_floor() == "10.12"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is here")
def test_start_without_tensorrt_is_unavailable_with_advice() -> None:
    with pytest.raises(BackendUnavailable) as err:
        start_tensorrt()
    assert "cannot import tensorrt" in str(err.value)
    assert err.value.install == install_advice()  # what to pip install for this driver


def test_serving_builds_drop_version_compatibility_and_cap_the_workspace() -> None:
    opts = TensorRTOptions(version_compatible=True, exclude_lean_runtime=True)
    s = builder_settings(opts, "fp32", mlp_contract(), tiny_mlp())
    assert {"VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"} <= set(s.builder_flags)
    gpu = H100.model_copy(update={"memory_mib": 81559})
    served = serving_settings(s, gpu)
    assert not served.version_compatible and "EXCLUDE_LEAN_RUNTIME" not in served.builder_flags
    assert served.workspace_bytes == 81559 * (1 << 20) // 4
    small = builder_settings(TensorRTOptions(workspace_mib=256), "fp32", mlp_contract(), tiny_mlp())
    assert serving_settings(small, gpu).workspace_bytes == 256 << 20
    assert serving_settings(s, H100).workspace_bytes is None  # memory unknown: no cap


@pytest.mark.parametrize("arch", ["aarch64", "x86_64"])
def test_artifacts_for_either_architecture(tmp_path: Path, arch: str) -> None:
    here = probe_host().arch
    result, _ = build(tmp_path, arch=arch, build="deferred")
    assert result.requirements.arch == arch and result.status == "deferred"
    if arch != here:
        with pytest.raises(BackendUnavailable, match=f"engine for {arch} cannot be built"):
            build(tmp_path / "pre", arch=arch, build="prebuilt")
        auto, _ = build(tmp_path / "auto", arch=arch)
        assert auto.status == "deferred" and auto.requirements.arch == arch
        assert f"an engine for {arch} cannot be built on this {here} host" in str(
            auto.runtime.deferred_reason  # type: ignore[union-attr]
        )


def test_engine_built_on_another_architecture_is_refused() -> None:
    rec = record(arch="x86_64").model_dump()
    assert check_compatibility(rec, host()) == []
    arm = host().model_copy(update={"arch": "aarch64"})
    assert check_compatibility(rec, arm) == ["engine was built on x86_64; host is aarch64"]


def test_engine_from_the_other_cuda_major_build_is_refused() -> None:
    rec = record(cuda="cu12").model_dump()
    assert check_compatibility(rec, host(), "cu12") == []
    assert check_compatibility(rec, host(), "cu13") == [
        "engine was built by the cu12 build of TensorRT; this host's is cu13"
    ]
    assert check_compatibility(record().model_dump(), host(), "cu13") == []  # older records
    assert check_compatibility(rec, host(), "") == []  # this host's flavour unknown
