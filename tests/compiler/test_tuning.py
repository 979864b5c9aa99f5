"""Runtime settings chosen by measurement and throughput at serving batch sizes, on a real
build of a tiny model (ONNX Runtime and OpenVINO artifacts): the records' structure and
invariants, never how fast anything is (figures depend on the host's CPU)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from compiler.core.contract import Contract
from compiler.core.feeds import read_feeds_npz
from compiler.core.host import probe_host
from compiler.core.latency import SpeedupInterval
from compiler.core.records import LatencyRecord, TunedSettings, TuningCandidate, tuned_runtime
from compiler.core.settings import OnnxRuntimeSettings, OpenVinoSettings
from compiler.measure.throughput import batch_feed, batch_problem
from compiler.measure.tuning import adopt, candidates, family_confidence, settle
from compiler.packaging.report import render_markdown
from compiler.packaging.rows import artifact_rows
from compiler.serving import loader
from compiler.serving.manifest import Manifest, manifest_json, read_manifest
from targets.onnxruntime.runtime import session
from targets.runner import open_runner
from tests.compiler.helpers import build
from tests.models import save, tiny_mlp

BATCHES = [1, 4, 128]  # 128: past the batch dim's default range (1..64), so skipped
VARIANTS = {
    "ort-fp32": {
        "passes": [{"name": "fuse", "level": "basic"}],
        "compile": {"backend": "onnxruntime"},
    },
    "ov-fp32": {"compile": {"backend": "openvino"}},
}


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tuning")
    model = save(tiny_mlp(), tmp / "mlp.onnx")
    raw = {
        "latency": {"runs": 6, "warmup": 1, "max_seconds": 1.0},
        "tuning": {"enabled": True, "seconds_per_artifact": 4},
        "serving": {"batch_sizes": BATCHES},
        "targets": {"cpu": {"variants": VARIANTS}},
        "verify": {"retime_slow": False},  # one build record per artifact: the sweep's
    }
    outcome = build(model, tmp / "pkg", None, targets=("cpu",), raw=raw)
    return outcome.package


def _latency(m: Manifest, aid: str) -> LatencyRecord:
    (lat,) = [r for r in m.measured(aid).latency if r.source == "build"]
    assert lat.measured, lat.reason
    return lat


@pytest.mark.parametrize("aid", ["cpu/ort-fp32", "cpu/ov-fp32"])
def test_the_sweep_keeps_the_default_unless_a_candidate_beats_it_beyond_its_interval(
    package: Path, aid: str
) -> None:
    m = read_manifest(package)
    a = m.artifact(aid)
    tuned = _latency(m, aid).tuning
    assert tuned is not None and tuned.status == "tuned", tuned
    # the manifest's core keeps the build's defaults: measurements never change it
    assert tuned.default == a.runtime
    first, *tried = tuned.candidates
    assert (first.name, first.status, first.settings) == ("default", "baseline", a.runtime)
    assert tried and len({c.name for c in tried}) == len(tried)
    for c in tried:
        assert c.settings.backend == a.backend and c.settings != a.runtime
        assert c.status in ("measured", "skipped"), c.reason
        if c.status == "measured":
            assert c.speedup is not None and c.speedup.low <= c.speedup.estimate <= c.speedup.high
    if tuned.adopted == "default":
        assert tuned.settings == a.runtime
        faster = adopt(tuned.candidates, m.policy.latency.confidence)
        assert faster is None or (tuned.busy and "host was busy" in tuned.reason)
    else:
        (chosen,) = [c for c in tried if c.name == tuned.adopted]
        assert chosen.speedup is not None and chosen.speedup.low > 1.0
        assert chosen.speedup.confidence >= m.policy.latency.confidence
        assert tuned.settings == chosen.settings
    assert tuned.host.cpu_model == probe_host().cpu_model


def test_latency_is_timed_with_the_adopted_settings(package: Path) -> None:
    m = read_manifest(package)
    lat = _latency(m, "cpu/ort-fp32")
    assert lat.tuning is not None
    settings = lat.tuning.settings
    assert isinstance(settings, OnnxRuntimeSettings)
    assert lat.runner["allow_spinning"] == settings.allow_spinning
    assert lat.runner["execution_mode"] == settings.execution_mode
    ov = _latency(m, "cpu/ov-fp32")
    assert ov.tuning is not None and isinstance(ov.tuning.settings, OpenVinoSettings)
    assert ov.runner["performance_hint"] == ov.tuning.settings.performance_hint


@pytest.mark.parametrize("aid", ["cpu/ort-fp32", "cpu/ov-fp32"])
def test_throughput_is_a_same_run_ratio_per_serving_batch(package: Path, aid: str) -> None:
    m = read_manifest(package)
    lat = _latency(m, aid)
    by_batch = {t.batch: t for t in lat.throughput}
    assert sorted(by_batch) == BATCHES
    one, four, big = by_batch[1], by_batch[4], by_batch[128]
    assert one.status == "measured" and one.speedup == lat.speedup  # the latency's own blocks
    assert four.status == "measured" and four.speedup is not None, four.reason
    assert four.speedup.pairs >= 1 and four.speedup.low <= four.speedup.estimate
    assert four.items_per_s and four.reference_items_per_s
    assert big.status == "skipped" and "dims.batch.max=128" in big.reason
    assert big.speedup is None


def test_report_and_inspect_rows_show_throughput_and_tuning(package: Path) -> None:
    m = read_manifest(package)
    rows = {r.id: r for r in artifact_rows(m)}
    for aid in ("cpu/ort-fp32", "cpu/ov-fp32"):
        assert [b.batch for b in rows[aid].throughput] == BATCHES
        assert rows[aid].tuned
    text = render_markdown(m)
    assert "## Serving: throughput by batch size" in text
    assert "| cpu/ort-fp32 | 4 |" in text and "runtime settings:" in text
    assert "runtime settings swept on" in text


def _adopt_first(m: Manifest, aid: str, host_edit: dict[str, object]) -> Manifest:
    """The package with its tuning record edited: the first timed candidate adopted, the
    host it was measured on changed by `host_edit` (the records digest rewritten)."""
    lat = _latency(m, aid)
    assert lat.tuning is not None
    chosen = next(c for c in lat.tuning.candidates if c.status == "measured")
    tuning = lat.tuning.model_copy(
        update={
            "adopted": chosen.name,
            "settings": chosen.settings,
            "host": lat.tuning.host.model_copy(update=host_edit),
        }
    )
    m.measured(aid).latency = [lat.model_copy(update={"tuning": tuning})]
    return m


def test_tuned_settings_apply_only_on_a_host_like_the_build_host(
    package: Path, tmp_path: Path
) -> None:
    host = probe_host()
    m = read_manifest(package)
    a = m.artifact("cpu/ort-fp32")
    assert a.runtime is not None
    same = _adopt_first(m, a.id, {})
    settings, why = tuned_runtime(a.runtime, same.measured(a.id).latency, host)
    assert settings != a.runtime and "tuned on a host like this" in why
    # measured on another CPU model: the core's defaults, and why
    other = _adopt_first(read_manifest(package), a.id, {"cpu_model": "Some Other CPU"})
    edited = tmp_path / "manifest.json"
    edited.write_text(manifest_json(other), encoding="utf-8")
    reread = read_manifest(tmp_path)
    assert reread.core_sha256 == read_manifest(package).core_sha256
    settings, why = tuned_runtime(a.runtime, reread.measured(a.id).latency, host)
    assert settings == a.runtime
    assert "cpu_model" in why and "Some Other CPU" in why
    feed = read_feeds_npz(package / "reference" / "inputs.npz")[0]
    with open_runner(a.backend, package / a.directory, settings, m.contract) as runner:
        assert runner.run(feed)["y"].shape == (1, 4)
    # a package without a sweep (older, or tuning off) serves its own settings, silently
    plain = [_latency(m, a.id).model_copy(update={"tuning": None})]
    assert tuned_runtime(a.runtime, plain, host) == (a.runtime, "")


@pytest.mark.parametrize("cpu_model", ["", "Some Other CPU"])
def test_the_loader_serves_tuned_settings_only_on_a_host_like_the_build_host(
    package: Path, tmp_path: Path, cpu_model: str
) -> None:
    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)
    edit = {"cpu_model": cpu_model} if cpu_model else {}
    m = _adopt_first(read_manifest(copy), "cpu/ort-fp32", edit)
    (copy / "manifest.json").write_text(manifest_json(m), encoding="utf-8")
    with loader.load(copy, require=["cpu/ort-fp32"]) as session:
        if cpu_model:
            assert "the tuned" in session.reason and cpu_model in session.reason
        else:
            assert "runtime settings tuned on a host like this" in session.reason


def _interval(low: float, est: float, high: float) -> SpeedupInterval:
    return SpeedupInterval(estimate=est, low=low, high=high, confidence=0.95, pairs=8)


def test_adopt_needs_the_lower_bound_above_one() -> None:
    s = OnnxRuntimeSettings(model="model.onnx")
    tried = [
        TuningCandidate(name="default", settings=s, status="baseline"),
        TuningCandidate(name="a", settings=s, speedup=_interval(0.98, 1.30, 1.60)),
        TuningCandidate(name="b", settings=s, speedup=_interval(1.02, 1.10, 1.20)),
        TuningCandidate(name="c", settings=s, speedup=_interval(1.05, 1.20, 1.30)),
        TuningCandidate(name="d", settings=s, status="crashed", reason="load: boom"),
    ]
    chosen = adopt(tried, 0.95)
    assert chosen is not None and chosen.name == "c"
    assert adopt(tried[:2], 0.95) is None
    assert adopt(tried, 0.99) is None  # intervals from too few pairs for that coverage
    assert family_confidence(0.95, 4) == pytest.approx(0.9875)


@pytest.mark.parametrize(
    ("load", "others", "adopted"),
    [
        (0.5, None, "fast"),
        (9.0, None, "default"),  # a sweep recorded before others_cpus: the load average
        # the sweep's own workers put the load average at 3.2 on a quiet 2-cpu host (ppocr_cls,
        # 2026-12-02): what other work used decides
        (3.2, 0.02, "fast"),
        (0.3, 1.1, "default"),
    ],
)
def test_nothing_is_adopted_from_a_sweep_on_a_busy_host(
    load: float, others: float | None, adopted: str
) -> None:
    s = OnnxRuntimeSettings(model="model.onnx")
    fast = dataclasses.replace(s, intra_op_num_threads=1)
    host = probe_host().model_copy(update={"cpu_count": 2}).model_dump()
    swept = TunedSettings(
        host=host,
        default=s,
        settings=s,
        host_load=load,
        others_cpus=others,
        candidates=[
            TuningCandidate(name="default", settings=s, status="baseline"),
            TuningCandidate(name="fast", settings=fast, speedup=_interval(1.10, 1.30, 1.50)),
        ],
    )
    settled = settle(swept, 0.95)
    assert settled.adopted == adopted
    assert settled.settings == (fast if adopted == "fast" else s)
    assert ("host was busy" in settled.reason) is (adopted == "default")


def test_a_sweep_is_busy_by_the_cpus_the_build_may_use() -> None:
    """A container pinned to 2 of a host's 64 CPUs: one cpu of other work there is busy,
    though it is little of the host."""
    s = OnnxRuntimeSettings(model="model.onnx")
    host = probe_host().model_copy(update={"cpu_count": 64}).model_dump()
    pinned = TunedSettings(host=host, default=s, settings=s, others_cpus=1.1, others_of=2)
    assert pinned.busy and pinned.cpus_watched == 2
    assert not pinned.model_copy(update={"others_of": None}).busy  # 1.1 of 64


def test_candidates_differ_from_the_default_in_one_setting() -> None:
    ort = OnnxRuntimeSettings(model="model.onnx")
    names = [n for n, _ in candidates(ort, pinned_threads=False, cpus=4, cores=2)]
    assert names == [
        "intra_op_num_threads=1",
        "intra_op_num_threads=4",
        "allow_spinning=False",
        "execution_mode=parallel",
    ]
    pinned = [n for n, _ in candidates(ort, pinned_threads=True, cpus=4, cores=2)]
    assert not any("threads" in n for n in pinned)
    ov = OpenVinoSettings(xml="model.xml", inference_precision="f32")
    tried = candidates(ov, pinned_threads=False, cpus=2, cores=2)
    assert [n for n, _ in tried] == ["performance_hint=THROUGHPUT", "num_threads=1"]
    for _, s in tried:
        diff = [f.name for f in dataclasses.fields(s) if getattr(s, f.name) != getattr(ov, f.name)]
        assert len(diff) == 1
    # a model with dynamic input dims: back to the model as built where its shapes compile
    # static, never the other way (the verdict judged no compile for one shape there, and
    # turns them off where they compute otherwise)
    dynamic = candidates(ov, pinned_threads=True, cpus=2, cores=2, dynamic=True)
    assert [n for n, _ in dynamic] == ["performance_hint=THROUGHPUT"]
    static = dataclasses.replace(ov, static_shapes=2)
    back = candidates(static, pinned_threads=True, cpus=2, cores=2, dynamic=True)
    assert [n for n, _ in back] == ["performance_hint=THROUGHPUT", "static_shapes=0"]


def test_batch_feeds_and_the_contract_s_limits() -> None:
    contract = Contract.model_validate(
        {
            "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 8]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", 4]}],
            "dims": {"batch": {"min": 1, "opt": 1, "max": 8}},
        }
    )
    assert batch_problem(contract, 8) == ""
    assert "allows 1..8, not 9" in batch_problem(contract, 9)
    fixed = contract.model_copy(
        update={"inputs": [contract.inputs[0].model_copy(update={"shape": [1, 8]})]}
    )
    assert "input 'x' has a fixed first dim 1" in batch_problem(fixed, 4)
    samples = [{"x": np.full((1, 8), i, np.float32)} for i in range(3)]
    feed = batch_feed(samples, 5)
    assert feed["x"].shape == (5, 8) and list(feed["x"][:, 0]) == [0, 1, 2, 0, 1]


def test_records_without_the_new_fields_still_load() -> None:
    on = probe_host().model_dump()
    old = LatencyRecord.model_validate({"host": on, "batch": 1, "input_shapes": {"x": [1, 8]}})
    assert old.tuning is None and old.throughput == []
    s = OnnxRuntimeSettings(model="model.onnx")
    record = TunedSettings(host=on, default=s, settings=s)
    assert record.host_mismatch(probe_host()) == ""


def test_onnx_runtime_sessions_take_the_spinning_setting(package: Path) -> None:
    m = read_manifest(package)
    a = m.artifact("cpu/ort-fp32")
    assert isinstance(a.runtime, OnnxRuntimeSettings)
    quiet = dataclasses.replace(a.runtime, allow_spinning=False)
    sess = session(package / a.directory / quiet.model, spinning=quiet.allow_spinning)
    entry = sess.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    assert entry == "0"
    with open_runner(a.backend, package / a.directory, quiet, m.contract) as runner:
        assert runner.describe()["allow_spinning"] is False
        feed = read_feeds_npz(package / "reference" / "inputs.npz")[0]
        assert runner.run(feed)["y"].shape == (1, 4)


def test_other_work_is_read_from_proc_stat_while_the_build_waits() -> None:
    """A process spinning beside the build shows in the reading of other work; the /proc/stat
    busy fields exclude idle and iowait and include steal, of the CPUs this process may run
    on."""
    from compiler.measure.contention import busy_jiffies, other_work, own_jiffies

    stat = (
        "cpu  100 5 20 9000 300 7 8 9 0 0\n"
        "cpu0 50 2 10 4500 150 3 4 4 0 0\n"
        "cpu1 50 3 10 4500 150 4 4 5 0 0\n"
        "intr 12345\n"
    )
    assert busy_jiffies(stat) == 100 + 5 + 20 + 7 + 8 + 9
    assert busy_jiffies(stat, {1}) == 50 + 3 + 10 + 4 + 4 + 5  # only the CPUs it may use
    assert busy_jiffies(stat, {7}) is None

    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat on this host")
    # whatever else the host does, the spinner's own CPU time over the window is in the
    # reading (the spinner inherits this process's CPUs)
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    proc = Path(f"/proc/{spin.pid}/stat")
    try:
        time.sleep(0.3)  # the interpreter has started and spins
        before, t0 = own_jiffies(proc.read_text()), time.perf_counter()
        got = other_work(0.5)
        spun = (own_jiffies(proc.read_text()) - before) / os.sysconf("SC_CLK_TCK")
        spun /= time.perf_counter() - t0
    finally:
        spin.kill()
        spin.wait()
    assert got is not None and got.of == len(os.sched_getaffinity(0))
    if spun < 0.2:
        pytest.skip(f"the host is too busy: the spinner got {spun:.2f} cpus")
    assert got.cpus >= spun - 0.1, (got, spun)
