"""Memory-aware admission on real worker processes: nodes whose estimated peaks do not fit in
the memory left run one after the other while smaller ones run beside them; a node bigger
than the host still runs once nothing else does; a worker measures the resident memory its
node added and the build records it in durations.json, which still reads in its older form.
The memory reading is injected (`MemoryGate.available`), so no figure depends on this host."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from compiler.core.records import NodeResult, ReferenceOutput
from compiler.pipeline.cache import Cache
from compiler.pipeline.config import BuildConfig, resolve_config
from compiler.pipeline.estimates import STATS_FILE, Durations, cost_class, workload
from compiler.pipeline.executors.memory import (
    MemoryGate,
    PeakMeter,
    available_mib,
    cgroup_room_mib,
    resident_mib,
)
from compiler.pipeline.executors.processes import ProcessExecutor
from compiler.pipeline.executors.registry import memory_gate
from compiler.pipeline.graph import PassNode, build_graph
from compiler.pipeline.nodes.context import BuildInputs, NodeContext
from compiler.pipeline.scheduler import Scheduler
from tests.compiler.test_scheduler import HOST, ToyKind, ToyNode, _graph

INPUTS = BuildInputs(Path("unused.onnx"), "0", BuildConfig(), ())
MODEL = workload(INPUTS)  # peaks are recorded per model and data
ALLOCATE_MIB = 300


@dataclass(frozen=True, eq=False)
class BigNode(ToyNode):
    kind: ClassVar[str] = "big"


@dataclass(frozen=True, eq=False)
class HungryNode(ToyNode):
    kind: ClassVar[str] = "hungry"


class HungryKind(ToyKind):
    """Touches ALLOCATE_MIB of memory, then does what a toy node does."""

    def run(self, node: ToyNode, ctx: NodeContext, out: Path) -> ReferenceOutput:
        block = np.ones(ALLOCATE_MIB << 20, np.uint8)
        assert int(block[::4096].sum()) == len(block[::4096])
        return super().run(node, ctx, out)


def _stats(cache: Cache, peaks: dict[str, float]) -> None:
    cache.root.mkdir(parents=True, exist_ok=True)
    doc = {
        "version": 1,
        "classes": {},
        "peaks_mib": {c: {MODEL: {"scale": 1.0, "mib": [mib]}} for c, mib in peaks.items()},
    }
    (cache.root / STATS_FILE).write_text(json.dumps(doc))


def _build(
    cache: Cache,
    g: object,
    gate: MemoryGate | None,
    log: list[str],
    workers: int = 2,
    forked_mib: dict[str, int | None] | None = None,
) -> dict[str, NodeResult]:
    """Run `g` on `workers` real workers; `log` gets "begin X" as the instruments begin a
    node, "start X" as its worker starts and "done X" as it is recorded; `forked_mib` each worker's resident MiB as it starts
    (the fork server's pages it was forked with)."""

    class Done:
        def before(self, node: ToyNode) -> None:
            log.append(f"begin {node.id}")

        def after(self, node: ToyNode, result: NodeResult) -> None:
            log.append(f"done {node.id}")

    def started(nid: str, pid: int) -> None:
        log.append(f"start {nid}")
        if forked_mib is not None:
            forked_mib[nid] = resident_mib(pid)

    kind, hungry = ToyKind(), HungryKind()
    kinds = {ToyNode: kind, BigNode: kind, HungryNode: hungry}
    executor = ProcessExecutor(workers, on_start=started)
    scheduler = Scheduler(kinds, cache, (Done(),), executor=executor, gate=gate)  # type: ignore[arg-type]
    return scheduler.run(NodeContext(INPUTS, g, HOST))  # type: ignore[arg-type]


def test_nodes_whose_peaks_do_not_fit_together_run_one_after_the_other(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(tmp_path / "cache")
    _stats(cache, {"big": 5000.0, "toy": 10.0})
    g = _graph(
        BigNode("big-1", 1, sleep=0.6),
        BigNode("big-2", 2, sleep=0.2),
        ToyNode("small", 3, sleep=0.1),
    )
    log: list[str] = []
    gate = MemoryGate(margin_mib=500, available=lambda: 8000)
    with caplog.at_level(logging.INFO, logger="compiler.pipeline.scheduler"):
        results = _build(cache, g, gate, log)
    assert {r.status for r in results.values()} == {"ran"}
    # big-2 fits only once big-1 is done (its time begins then too); the small node runs
    # beside big-1 meanwhile
    assert log.index("begin big-2") > log.index("done big-1")
    assert log.index("start big-2") > log.index("done big-1")
    assert log.index("start small") < log.index("done big-1")
    waited = [r.getMessage() for r in caplog.records if "waits for memory" in r.getMessage()]
    assert len(waited) == 1 and waited[0].startswith("big-2 waits for memory")
    assert "estimated at 5000 MiB; 8000 MiB available" in waited[0]
    assert "500 MiB margin" in waited[0] and "(big-1)" in waited[0]

    # the same build with the memory to spare: the two big nodes run side by side
    again: list[str] = []
    _stats(cache := Cache(tmp_path / "cache2"), {"big": 5000.0})
    _build(cache, g, MemoryGate(margin_mib=500, available=lambda: 20000), again)
    assert again.index("start big-2") < again.index("done big-1")


def test_a_node_bigger_than_the_host_still_runs_when_nothing_else_does(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    _stats(cache, {"big": 50000.0})
    g = _graph(BigNode("big-1", 1, sleep=0.2), BigNode("big-2", 2, sleep=0.2))
    log: list[str] = []
    results = _build(cache, g, MemoryGate(margin_mib=0, available=lambda: 100), log)
    assert {r.status for r in results.values()} == {"ran"}
    starts = [line for line in log if not line.startswith("begin")]
    assert starts == ["start big-1", "done big-1", "start big-2", "done big-2"]


def test_a_workers_peak_memory_is_measured_and_recorded(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    g = _graph(HungryNode("hungry", 1), ToyNode("toy", 2, ("hungry",)))
    forked: dict[str, int | None] = {}
    results = _build(cache, g, MemoryGate(available=lambda: None), [], 1, forked)
    assert {r.status for r in results.values()} == {"ran"}
    doc = json.loads((cache.root / STATS_FILE).read_text())
    hungry = doc["peaks_mib"]["hungry"][MODEL]
    assert hungry["scale"] == 1.0 and hungry["mib"][0] >= ALLOCATE_MIB
    # the pages the worker was forked with are the fork server's (shared), not the node's
    toy = doc["peaks_mib"].get("toy", {MODEL: {"mib": [0]}})[MODEL]["mib"][0]
    assert forked["toy"] is not None and toy < forked["toy"]
    assert sorted(doc["classes"]) == ["hungry", "toy"]  # durations recorded beside them
    # the next build of the model estimates from what was measured, not the hint
    recorded = Durations(cache.root / STATS_FILE, 0, MODEL)
    assert recorded.peak_mib(HungryNode("hungry")) == hungry["mib"][0]
    # a model never built, three times the size: scaled from what this one measured
    other = Durations(cache.root / STATS_FILE, 3 << 20, "another")
    assert other.peak_mib(HungryNode("hungry")) > 2 * hungry["mib"][0]


def test_a_peak_meter_counts_what_its_process_added() -> None:
    meter = PeakMeter()
    block = np.ones(ALLOCATE_MIB << 20, np.uint8)
    assert meter.added_mib() >= ALLOCATE_MIB
    del block
    free = available_mib()
    assert free is not None and free > 0


def _files(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".", 1)).write_text(text + "\n")


def test_the_tightest_cgroup_limit_bounds_the_memory_left(tmp_path: Path) -> None:
    # real cgroup files laid out as the kernel does, in a folder of the test's own
    gib = 1 << 30
    v2 = tmp_path / "v2"
    _files(v2, memory_current="0")  # the root: no memory.max
    _files(v2 / "build.slice", memory_max="max", memory_current=str(5 * gib))
    stat = f"anon {3 * gib}\ninactive_file {gib // 2}"
    leaf = {"memory_max": str(4 * gib), "memory_current": str(3 * gib), "memory_stat": stat}
    _files(v2 / "build.slice" / "job", **leaf)
    (tmp_path / "cgroup-v2").write_text("0::/build.slice/job\n")
    assert cgroup_room_mib(tmp_path / "cgroup-v2", v2) == 1536  # 1 GiB + reclaimable cache
    v1 = tmp_path / "v1"
    no_limit = str(9223372036854771712)
    _files(v1 / "memory", memory_limit_in_bytes=no_limit, memory_usage_in_bytes="1")
    (tmp_path / "cgroup-v1").write_text("4:memory:/\n0::/\n")
    assert cgroup_room_mib(tmp_path / "cgroup-v1", v1) is None  # no limit set
    _files(v1 / "memory", memory_limit_in_bytes=str(2 * gib), memory_usage_in_bytes=str(gib))
    assert cgroup_room_mib(tmp_path / "cgroup-v1", v1) == 1024


def test_a_durations_file_without_peaks_still_reads_and_gains_them(tmp_path: Path) -> None:
    path = tmp_path / STATS_FILE
    path.write_text(json.dumps({"version": 1, "classes": {"big": [2.0, 3]}}))
    old = Durations(path, 0, MODEL)
    assert old.estimate(BigNode("b")) == 2.0
    hint = old.peak_mib(BigNode("b"))  # no peak recorded: the static hint
    assert hint == Durations(None, 0).peak_mib(BigNode("b")) and hint != 700.0
    old.record(BigNode("b"), 4.0, peak_mib=700)
    old.save()
    doc = json.loads(path.read_text())
    assert doc["classes"]["big"] == [2.5, 4]
    assert doc["peaks_mib"]["big"][MODEL] == {"scale": 1.0, "mib": [700.0]}
    assert Durations(path, 0, MODEL).peak_mib(BigNode("b")) == 700.0
    path.write_text(json.dumps({"version": 1, "classes": {}, "peaks_mib": {"big": [1, 2]}}))
    assert Durations(path, 0, MODEL).peak_mib(BigNode("b")) == hint  # foreign: no knowledge


def test_more_calibration_samples_are_another_workload(tmp_path: Path) -> None:
    # calibration keeps every sample's tensors: a model's peak with 8 samples says little
    # about 16, so the estimate falls back to the hint rather than reuse it
    data = tmp_path / "calibration"
    data.mkdir()
    (data / "0000.npz").write_bytes(b"x" * 100)
    given = BuildInputs(Path("m.onnx"), "0", BuildConfig(), (), calibration_data=data)
    first = workload(given)
    assert workload(given) == first != workload(INPUTS)
    (data / "0001.npz").write_bytes(b"x" * 100)
    assert workload(given) != first


def test_calibration_hints_keep_two_first_build_calibrations_apart() -> None:
    # layout_cdla (PicoDet, 7.1 MiB) peaked at ~14 GiB per static-quantize calibration of 16
    # samples: two side by side were OOM-killed on a 24 GiB host, so the first-build hint must
    # exceed half
    g = build_graph(resolve_config({}, ["cpu"]), ["cpu"])
    calibrations = [n for n in g if isinstance(n, PassNode) and n.uses_calibration]
    # fuse reads two calibration feeds to check its transformer fusions (passes/fuse.py)
    assert {cost_class(n) for n in calibrations} == {"pass:quantize", "pass:nncf", "pass:fuse"}
    first_build = Durations(None, int(7.1 * (1 << 20)))
    quantizes = [n for n in calibrations if cost_class(n) == "pass:quantize"]
    assert len(quantizes) == 2
    assert all(first_build.peak_mib(n) > 24 * 1024 / 2 for n in quantizes)


def test_the_config_sets_the_margin_or_turns_the_check_off() -> None:
    pool = ProcessExecutor(1)
    gate = memory_gate(resolve_config({}, ["cpu"]).executor, pool)
    assert gate is not None and gate.margin_mib == 1024
    set_margin = resolve_config({}, ["cpu"], ["executor.memory_margin_mb=256"]).executor
    assert memory_gate(set_margin, pool) == MemoryGate(256)
    off = resolve_config({}, ["cpu"], ["executor.memory_margin_mb=-1"]).executor
    assert memory_gate(off, pool) is None
    pool.close()
