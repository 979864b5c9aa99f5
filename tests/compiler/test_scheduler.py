"""The scheduler on toy node kinds: it knows no kind by name, caches by content, keeps failures
in their branch, skips descendants with the parent's install hint, and its instruments time
each node once; ready nodes start longest first (durations recorded in the cache), exclusive
nodes alone and after the others. Holdings: the in-memory model handoff between passes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import onnx
import pytest

from compiler.core.errors import BuildError
from compiler.core.host import HostInfo
from compiler.core.records import Availability, NodeResult, ReferenceOutput
from compiler.pipeline.cache import Cache
from compiler.pipeline.config import BuildConfig
from compiler.pipeline.estimates import STATS_FILE
from compiler.pipeline.executors.processes import ProcessExecutor
from compiler.pipeline.graph import NodeDef, NodeGraph
from compiler.pipeline.instruments import ProgressInstrument, TimingInstrument
from compiler.pipeline.nodes.base import KeyMaterial, Kind
from compiler.pipeline.nodes.context import BuildInputs, Holdings, NodeContext
from compiler.pipeline.scheduler import Scheduler
from tests.models import tiny_mlp

HOST = HostInfo(arch="x86_64", cpu_model="toy", cpu_count=1, isa=[], os="linux")


@dataclass(frozen=True, eq=False)
class ToyNode(NodeDef):
    kind: ClassVar[str] = "toy"
    value: int = 0
    inputs: tuple[str, ...] = ()
    fail: str = ""  # run raises this
    refuse: str = ""  # run raises this as a BuildError (a backend refusing the model)
    missing: bool = False  # skip: "cannot run here"
    sleep: float = 0.0

    @property
    def parents(self) -> tuple[str, ...]:
        return self.inputs


class ToyKind(Kind[ToyNode]):
    def __init__(self) -> None:
        self.ran: list[str] = []

    def key(self, node: ToyNode, ctx: NodeContext) -> KeyMaterial:
        return {"value": node.value}

    def skip(self, node: ToyNode, ctx: NodeContext) -> Availability | None:
        if node.missing:
            return Availability(ok=False, reason="toylib is missing", install="pip install toylib")
        return None

    def run(self, node: ToyNode, ctx: NodeContext, out: Path) -> ReferenceOutput:
        self.ran.append(node.id)
        time.sleep(node.sleep)
        if node.fail:
            raise RuntimeError(node.fail)
        if node.refuse:
            (out / "partial.bin").write_bytes(b"half an artifact")
            raise BuildError(node.refuse)
        total = node.value + sum(
            ctx.output(p, ReferenceOutput).samples for p in ctx.graph.parents(node.id)
        )
        (out / "value.txt").write_text(str(total))
        return ReferenceOutput(runtime="toy", provider="toy", precision="fp32", samples=total)


def _graph(*nodes: ToyNode) -> NodeGraph:
    g = NodeGraph()
    for n in nodes:
        g.add(n)
    return g


def _run(
    g: NodeGraph, cache: Cache, kind: ToyKind | None = None, instruments: tuple = ()
) -> dict[str, NodeResult]:
    inputs = BuildInputs(Path("unused.onnx"), "0", BuildConfig(), ())
    kinds = {ToyNode: kind or ToyKind()}
    return Scheduler(kinds, cache, instruments).run(NodeContext(inputs, g, HOST))


def test_a_registered_toy_kind_runs_and_caches_by_content(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    kind = ToyKind()
    first = _run(_graph(ToyNode("a", 1), ToyNode("b", 2, ("a",))), cache, kind)
    assert {n: r.status for n, r in first.items()} == {"a": "ran", "b": "ran"}
    assert first["b"].expect(ReferenceOutput).samples == 3
    assert first["b"].out is not None and (first["b"].out / "value.txt").read_text() == "3"
    again = _run(_graph(ToyNode("a", 1), ToyNode("b", 5, ("a",))), cache, kind)
    assert {n: r.status for n, r in again.items()} == {"a": "cached", "b": "ran"}
    assert kind.ran == ["a", "b", "b"]


def test_a_refused_model_is_remembered_and_a_crash_is_not(tmp_path: Path) -> None:
    """A backend's refusal (BuildError) recurs with the same key: the next build reports it
    without running the node again; an unexpected exception is tried again each build;
    retry_failed (executor.retry_failed) runs a remembered one again; a kind not named in
    `remember` is never remembered."""
    cache = Cache(tmp_path / "cache")
    g = _graph(ToyNode("a", 1), ToyNode("no", 2, ("a",), refuse="op If unsupported"))
    g.add(ToyNode("crash", 3, ("a",), fail="segfault-ish"))
    inputs = BuildInputs(Path("unused.onnx"), "0", BuildConfig(), ())

    def build(kind: ToyKind, retry: bool = False) -> dict[str, NodeResult]:
        scheduler = Scheduler({ToyNode: kind}, cache, remember=("toy",), retry_failed=retry)
        return scheduler.run(NodeContext(inputs, g, HOST))

    first = build(kind := ToyKind())
    assert (first["no"].status, first["no"].reason) == ("failed", "op If unsupported")
    assert sorted(kind.ran) == ["a", "crash", "no"]
    again = build(kind := ToyKind())
    assert kind.ran == ["crash"]  # the refusal is not run again; the crash is
    assert again["no"].status == "failed" and again["no"].reason.startswith("op If unsupported")
    assert "remembered from an earlier build" in again["no"].reason
    assert "executor.retry_failed=true" in again["no"].reason
    assert again["no"].key == first["no"].key
    assert not list(cache.root.rglob("partial.bin"))  # what it wrote before failing is gone
    retried = build(kind := ToyKind(), retry=True)
    assert sorted(kind.ran) == ["crash", "no"] and "remembered" not in retried["no"].reason
    assert build(kind := ToyKind())["no"].status == "failed" and kind.ran == ["crash"]
    fresh = Cache(tmp_path / "fresh")
    for _ in range(2):  # by default only compiles and passes are remembered
        kind = ToyKind()
        assert Scheduler({ToyNode: kind}, fresh).run(NodeContext(inputs, g, HOST))["no"].reason
        assert "no" in kind.ran


def test_an_entry_of_an_older_record_layout_is_made_anew(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    first = _run(_graph(ToyNode("a", 1)), cache)
    entry = cache.root / first["a"].key[:2] / first["a"].key
    (entry / "node.json").write_text('{"status": "ran", "output": {"kind": "toy"}}')
    again = _run(_graph(ToyNode("a", 1)), cache)
    assert again["a"].status == "ran" and again["a"].key == first["a"].key
    assert _run(_graph(ToyNode("a", 1)), cache)["a"].status == "cached"


def test_a_node_type_without_a_kind_is_refused(tmp_path: Path) -> None:
    inputs = BuildInputs(Path("unused.onnx"), "0", BuildConfig(), ())
    ctx = NodeContext(inputs, _graph(ToyNode("a")), HOST)
    with pytest.raises(TypeError, match=r"no node kind registered for \['ToyNode'\]"):
        Scheduler({}, Cache(tmp_path / "cache")).run(ctx)


def test_a_failure_stays_in_its_branch(tmp_path: Path) -> None:
    g = _graph(
        ToyNode("a", 1),
        ToyNode("bad", inputs=("a",), fail="boom"),
        ToyNode("after-bad", inputs=("bad",)),
        ToyNode("ok", inputs=("a",)),
    )
    results = _run(g, Cache(tmp_path / "cache"))
    assert results["bad"].status == "failed" and "RuntimeError: boom" in results["bad"].reason
    assert "Traceback" in results["bad"].traceback
    assert results["after-bad"].status == "skipped"
    assert results["after-bad"].reason == "upstream bad failed: RuntimeError: boom"
    assert results["ok"].status == "ran"
    assert not list((tmp_path / "cache" / "tmp").rglob("node-*"))  # the failed scratch is gone


def test_a_skip_repeats_a_long_upstream_reason_in_short(tmp_path: Path) -> None:
    """A TensorRT preflight's failure names every op its parser lacks: the nodes after it say
    where it failed, not all of it again (the progress log printed each such list twice)."""
    long = "unsupported ops: " + ", ".join(f"Op{i}" for i in range(60))
    g = _graph(ToyNode("bad", fail=long), ToyNode("after", inputs=("bad",)))
    results = _run(g, Cache(tmp_path / "cache"))
    assert long in results["bad"].reason
    reason = results["after"].reason
    assert reason.startswith("upstream bad failed: RuntimeError: unsupported ops: Op0, Op1")
    assert reason.endswith("... (in bad's result)") and len(reason) < 260


def test_upstream_skips_carry_the_install_hint(tmp_path: Path) -> None:
    g = _graph(ToyNode("lib", missing=True), ToyNode("uses", inputs=("lib",)))
    results = _run(g, Cache(tmp_path / "cache"))
    assert results["lib"].status == "skipped" and results["lib"].install == "pip install toylib"
    uses = results["uses"]
    assert uses.status == "skipped" and uses.reason == "upstream lib skipped: toylib is missing"
    assert uses.install == "pip install toylib"


class _Recorder:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def before(self, node: NodeDef) -> None:
        self.log.append(f"{self.name}.before {node.id}")

    def after(self, node: NodeDef, result: NodeResult) -> None:
        self.log.append(f"{self.name}.after {node.id}")


def test_instruments_nest_around_each_node_once(tmp_path: Path) -> None:
    log: list[str] = []
    instruments = (_Recorder("outer", log), _Recorder("inner", log))
    _run(
        _graph(ToyNode("a"), ToyNode("b", inputs=("a",))), Cache(tmp_path / "c"), None, instruments
    )
    assert log == [
        "outer.before a",
        "inner.before a",
        "inner.after a",
        "outer.after a",
        "outer.before b",
        "inner.before b",
        "inner.after b",
        "outer.after b",
    ]


def test_timing_is_the_instrument_s_and_taken_once(tmp_path: Path) -> None:
    ticks: list[float] = []

    def clock() -> float:
        ticks.append(time.perf_counter())
        return ticks[-1]

    g = _graph(ToyNode("slow", sleep=0.05))
    events: list[tuple[str, float | None]] = []
    progress = ProgressInstrument(lambda nid, r: events.append((nid, r and r.seconds)))
    timed = _run(g, Cache(tmp_path / "c1"), None, (progress, TimingInstrument(clock)))
    assert len(ticks) == 2  # one start, one stop: nothing else times the node
    assert timed["slow"].seconds >= 0.05
    assert events == [("slow", None), ("slow", timed["slow"].seconds)]
    untimed = _run(g, Cache(tmp_path / "c2"))
    assert untimed["slow"].seconds == 0.0  # nodes and kinds never time themselves


@dataclass(frozen=True, eq=False)
class SlowNode(ToyNode):
    kind: ClassVar[str] = "slow"


@dataclass(frozen=True, eq=False)
class QuickNode(ToyNode):
    kind: ClassVar[str] = "quick"


@dataclass(frozen=True, eq=False)
class MeasureNode(ToyNode):
    kind: ClassVar[str] = "measure"


def _scheduler(cache: Cache, log: list[str], **kw: object) -> Scheduler:
    kind = ToyKind()
    kinds = {t: kind for t in (ToyNode, SlowNode, QuickNode, MeasureNode)}
    return Scheduler(kinds, cache, (_Recorder("i", log),), **kw)  # type: ignore[arg-type]


def test_ready_nodes_start_longest_path_first_by_recorded_durations(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    cache.root.mkdir(parents=True)
    stats = cache.root / STATS_FILE
    # earlier builds' seconds per MiB: "toy" has none (its static hint, 0.3 s, applies)
    stats.write_text(json.dumps({"version": 1, "classes": {"slow": [10, 3], "quick": [0.01, 3]}}))
    g = _graph(
        ToyNode("a", 1),
        QuickNode("b-quick", 2, ("a",)),
        SlowNode("c-slow", 3, ("a",)),
        ToyNode("d-toy", 4, ("a",)),
        QuickNode("e-quick", 5, ("a",)),  # short, but a slow node waits on it
        SlowNode("f-slow", 6, ("e-quick",)),
    )
    log: list[str] = []
    inputs = BuildInputs(Path("unused.onnx"), "0", BuildConfig(), ())
    results = _scheduler(cache, log).run(NodeContext(inputs, g, HOST))
    assert set(r.status for r in results.values()) == {"ran"}
    assert list(results) == ["a", "b-quick", "c-slow", "d-toy", "e-quick", "f-slow"]  # graph's
    started = [line.split()[1] for line in log if ".before" in line]
    assert started == ["a", "e-quick", "c-slow", "f-slow", "d-toy", "b-quick"]
    recorded = json.loads(stats.read_text())["classes"]
    assert recorded["slow"][1] == 5 and 0 < recorded["slow"][0] < 10  # two more, far shorter
    assert recorded["toy"][1] == 2 and recorded["quick"][1] == 5


def test_an_unreadable_durations_file_falls_back_to_the_hints_and_is_rewritten(
    tmp_path: Path,
) -> None:
    cache = Cache(tmp_path / "cache")
    cache.root.mkdir(parents=True)
    (cache.root / STATS_FILE).write_text("{not json")
    log: list[str] = []
    inputs = BuildInputs(Path("unused.onnx"), "0", BuildConfig(), ())
    g = _graph(ToyNode("a"), SlowNode("b", inputs=("a",)))
    assert _scheduler(cache, log).run(NodeContext(inputs, g, HOST))["b"].status == "ran"
    doc = json.loads((cache.root / STATS_FILE).read_text())
    assert sorted(doc["classes"]) == ["slow", "toy"]


def test_exclusive_nodes_run_alone_once_nothing_else_can(tmp_path: Path) -> None:
    # m is ready as soon as a is done, but runs only after x and y (two slots: real workers)
    g = _graph(
        ToyNode("a", 1),
        MeasureNode("m", 2, ("a",)),
        ToyNode("x", 3, ("a",), sleep=0.2),
        ToyNode("y", 4, ("x",), sleep=0.2),
        ToyNode("z", 5, ("a",), sleep=0.2),
    )
    log: list[str] = []
    inputs = BuildInputs(Path("unused.onnx"), "0", BuildConfig(), ())
    scheduler = _scheduler(
        Cache(tmp_path / "cache"), log, executor=ProcessExecutor(2), exclusive=["measure"]
    )
    results = scheduler.run(NodeContext(inputs, g, HOST))
    assert set(r.status for r in results.values()) == {"ran"}
    assert log[-2:] == ["i.before m", "i.after m"]  # after every other node, nothing beside it
    assert log.index("i.before z") < log.index("i.after x")  # the others share the slots


def test_first_nodes_run_before_any_other_node_starts(tmp_path: Path) -> None:
    # the data checks refuse bad input before a compile beside them starts (a CI run under
    # load saw ort-fp32's compile start and finish beside the data node that refused the file):
    # with two slots, c is ready with d, but starts only once d is done; d fails and stops
    # nothing here (no stop_on), so c runs after it
    g = _graph(
        ToyNode("a", 1),
        ToyNode("d", 2, ("a",), sleep=0.3, fail="samples.npz: missing inputs ['x']"),
        ToyNode("c", 3, ("a",)),
    )
    for first, c_before_d_ends in ((("a", "d"), False), ((), True)):
        log: list[str] = []
        inputs = BuildInputs(Path("unused.onnx"), "0", BuildConfig(), ())
        scheduler = _scheduler(
            Cache(tmp_path / f"cache-{len(first)}"), log, executor=ProcessExecutor(2), first=first
        )
        results = scheduler.run(NodeContext(inputs, g, HOST))
        assert results["d"].status == "failed" and results["c"].status == "ran"
        assert (log.index("i.before c") < log.index("i.after d")) is c_before_d_ends, log


def test_holdings_hand_a_copy_to_all_but_the_last_taker() -> None:
    g = NodeGraph()
    g.add(ToyNode("src"))
    for child in ("x", "y"):
        g.add(ToyNode(child, inputs=("src",)), handoff_from="src")
    g.add(ToyNode("file-reader", inputs=("src",)))  # takes no handoff
    held = Holdings(g)
    model = tiny_mlp()
    held.put("src", model)
    first = held.take("src", "x")
    assert first is not None and first is not model and first == model
    assert held.take("src", "y") is model
    assert held.held == frozenset()


def test_holdings_drop_a_model_no_child_waits_for() -> None:
    g = NodeGraph()
    g.add(ToyNode("src"))
    g.add(ToyNode("x", inputs=("src",)), handoff_from="src")
    g.add(ToyNode("leaf"))
    held = Holdings(g)
    held.put("leaf", onnx.ModelProto())  # no handoff child: not kept
    held.put("src", onnx.ModelProto())
    assert held.held == {"src"}
    held.finished("x", ok=False)  # the child was skipped or failed without taking it
    assert held.held == frozenset() and held.take("src", "x") is None
