"""The scheduler: runs a graph's nodes in topological order, each through its node kind, with
every output cached under a content key.

A node's key is the sha256 of its kind, the kind's version, the tool version, the kind's key
material (parameters and library versions) and its parents' output digests; nothing else
enters it, so a config change re-runs exactly the nodes whose parameters changed and their
descendants. A node whose parent failed or was skipped is skipped (carrying the parent's
install hint); a failure stays in its branch, except in a `stop_on` node (the head nodes every
artifact needs): then the run stops at once with `StopBuild`, carrying the node's own error,
instead of skipping every node below it. The scheduler knows no kind by name: `kinds` maps
each node-definition type to its kind.

Where a node runs is the executor's business (pipeline/executors/): the scheduler hands it
ready nodes (parents done, a slot free), the node's key held and a scratch folder to write,
and commits what comes back. The results are the same whichever executor ran them, and
`ctx.results` ends in the graph's order.

Which ready node starts first: the one with the longest estimated path to the end of the
build (its own estimate plus its longest chain of descendants; pipeline/estimates.py: earlier
builds' durations from the cache, else static hints), so the TVM gpu compiles that dominate a
release build start first instead of last, and the short nodes fill the other slots.

`first` nodes (the build's normalize and data: the checks of the user's files against the
contract) run before any other node starts, so bad input is refused before any pass or
compile has begun, however the host's load orders the workers (compiler/build.py).

Exclusive nodes (verify: `executor.exclusive`) run alone, and only once no other node is
ready or running: they time latency with every core of the host (the runtimes' default
threads), so a compile beside them would skew the artifact's figures against the
reference's. Holding them back until the compiles are done, instead of starting each as soon
as its compile finishes, keeps the pool full while there is compile work: a verify that
started early would stop every other slot for its whole run. Verify is a leaf, so nothing
waits on it.

Memory (`gate`, executors/memory.py): a ready node starts beside running ones only if its
estimated peak (pipeline/estimates.py: the most earlier builds measured, else a hint) fits in
the memory the host or its cgroup has left, less what the running nodes may still grow by and
a margin; else it waits until a running node finishes, while smaller ready nodes start. It is
checked before the node is keyed, so a waiting node holds no cache key and is not timed (a
cached one waits too: its key is not known yet). A node always starts when nothing else runs,
so none waits forever: one bigger than the host runs alone, as in-process.

Failures: a compile or pass that a backend or pass refused (BuildError, PassError: the same
inputs and libraries would fail the same way) is kept in the cache under its key, with its
reason, and the next build reports it without the minutes of failing again; a kill, a limit,
an allocation failure or an unexpected exception is never kept. `retry_failed`
(`executor.retry_failed`) runs remembered failures again.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from compiler import __version__
from compiler.core.errors import short_message
from compiler.core.hashing import dir_digest, sha256_json
from compiler.core.records import NodeResult
from compiler.pipeline.cache import BUSY, Busy, Cache
from compiler.pipeline.estimates import STATS_FILE, Durations, model_bytes, workload
from compiler.pipeline.executors.base import Executor, NodeRun
from compiler.pipeline.executors.inprocess import InProcessExecutor
from compiler.pipeline.executors.memory import MemoryGate
from compiler.pipeline.graph import NodeDef
from compiler.pipeline.instruments import Instrument
from compiler.pipeline.nodes.base import NodeKind
from compiler.pipeline.nodes.context import NodeContext

__all__ = ["REMEMBERED", "Scheduler", "StopBuild"]

log = logging.getLogger(__name__)

# node kinds whose repeatable failures (a backend or pass refusing the model, NodeRun) the
# cache keeps under their key, so the next build with the same inputs and libraries does not
# spend the same minutes failing again (an OpenVINO conversion that fails after 20 s)
REMEMBERED = ("compile", "pass")
_REMEMBERED_NOTE = (
    " (remembered from an earlier build with the same inputs and libraries; "
    "--set executor.retry_failed=true runs it again)"
)

# how much of an upstream node's reason a skipped node repeats: the whole of it is in that
# node's own result (a TensorRT preflight lists every op its parser lacks)
_UPSTREAM_REASON_CHARS = 200


class StopBuild(Exception):
    """A `stop_on` node did not succeed; `error` is what it raised (None for a skip)."""

    def __init__(self, node: str, result: NodeResult, error: BaseException | None) -> None:
        self.node = node
        self.result = result
        self.error = error
        super().__init__(f"{node} {result.status}: {result.reason}")


@dataclass(frozen=True)
class _Submitted:
    node: NodeDef
    kind: NodeKind[Any]
    key: str
    scratch: Path
    started: float = field(default_factory=time.monotonic)


class Scheduler:
    """Runs graphs with `kinds`, `cache`, and `instruments` around every node, on `executor`
    (in this process by default); stops the run when a node in `stop_on` fails or is
    skipped. Nodes in `first` run before any other node starts (their parents aside).
    Nodes of the kinds in `exclusive` run with no other node beside them, after the
    others. `durations` estimates how long nodes run (default: from the stats file in
    the cache root, which the run updates, also with each node's peak memory). With `gate`,
    a node runs beside others only when its estimated peak memory fits."""

    def __init__(
        self,
        kinds: Mapping[type[NodeDef], NodeKind[Any]],
        cache: Cache,
        instruments: Sequence[Instrument] = (),
        stop_on: Collection[str] = (),
        executor: Executor | None = None,
        exclusive: Collection[str] = (),
        durations: Durations | None = None,
        gate: MemoryGate | None = None,
        remember: Collection[str] = REMEMBERED,
        retry_failed: bool = False,
        first: Collection[str] = (),
    ) -> None:
        self.kinds = kinds
        self.cache = cache
        self.instruments = tuple(instruments)
        self.stop_on = frozenset(stop_on)
        self.first = frozenset(first)
        self.executor = executor or InProcessExecutor()
        self.exclusive = frozenset(exclusive)
        self.durations = durations
        self.gate = gate
        self.remember = frozenset(remember)
        self.retry_failed = retry_failed
        self.errors: dict[str, BaseException] = {}  # node id -> what a failed node raised
        self._running: dict[str, _Submitted] = {}
        self._begun: set[str] = set()  # nodes whose instruments have started
        self._head: set[str] = set()  # the `first` nodes and their ancestors, per run
        self._keys: dict[str, str] = {}  # node id -> its cache key, once computed
        self._priority: dict[str, tuple[float, int]] = {}  # node id -> its sort key when ready
        self._estimates = Durations(None, 0)  # this run's, set by `run`
        self._held: set[str] = set()  # nodes that have waited for memory in this run

    def run(self, ctx: NodeContext) -> dict[str, NodeResult]:
        """Every node of `ctx.graph`; results land in `ctx.results` as they finish."""
        unknown = sorted({type(n).__name__ for n in ctx.graph if type(n) not in self.kinds})
        if unknown:
            raise TypeError(f"no node kind registered for {unknown}")
        durations = self.durations or Durations(
            self.cache.root / STATS_FILE if self.cache.enabled else None,
            model_bytes(ctx.inputs.source_path),
            workload(ctx.inputs),
        )
        self._estimates = durations
        self._held.clear()
        ctx.scratch = self.cache.scratch()
        order = ctx.graph.order()
        self._priority = self._priorities(order, ctx, durations)
        # the `first` nodes and what they wait on: until they are done, only these start
        self._head = {f for f in self.first if f in ctx.graph}
        for f in list(self._head):
            self._head |= ctx.graph.ancestors(f)
        pending = list(order)
        self._begun.clear()
        self._keys.clear()
        try:
            while pending or self._running:
                waiting = len(pending)
                self._start_ready(pending, ctx)
                if not self._running:
                    if len(pending) == waiting:
                        raise RuntimeError(f"no node of {len(pending)} pending can start")
                    continue  # every node started was settled at once (skip, cache hit)
                for nid, run in self.executor.wait():
                    submitted = self._running.pop(nid)
                    seconds = time.monotonic() - submitted.started
                    log.debug(
                        "%s done in %.1f s, %d MiB at its peak", nid, seconds, run.peak_rss_mib
                    )
                    if run.output is not None:
                        durations.record(submitted.node, seconds, run.peak_rss_mib)
                    self._finish(submitted, run, ctx)
        finally:
            self.executor.close()
            for submitted in self._running.values():
                self.cache.discard(submitted.scratch)
            self._running.clear()
            durations.save()
        done = {n.id: ctx.results[n.id] for n in order}
        ctx.results.clear()
        ctx.results.update(done)
        return ctx.results

    def _priorities(
        self, order: list[NodeDef], ctx: NodeContext, durations: Durations
    ) -> dict[str, tuple[float, int]]:
        """Sort key of each node among ready ones: longest estimated path to the end of the
        build first (exclusive nodes run last anyway, so they add nothing to their parents'
        path), then graph order."""
        path: dict[str, float] = {}
        for node in reversed(order):
            below = [
                path[c]
                for c in ctx.graph.children(node.id)
                if ctx.graph.node(c).kind not in self.exclusive
            ]
            path[node.id] = durations.estimate(node) + max(below, default=0.0)
        return {n.id: (-path[n.id], i) for i, n in enumerate(order)}

    def _start_ready(self, pending: list[NodeDef], ctx: NodeContext) -> None:
        """Start ready nodes, longest first, while slots are free; exclusive ones only when
        nothing else runs or can start. A node whose key another build holds waits while
        this build runs others."""
        while self._start_some(pending, ctx, exclusive=False):
            pass  # some settled at once (a skip, a cache hit): their children may be ready
        if not self._running:
            self._start_some(pending, ctx, exclusive=True)

    def _start_some(self, pending: list[NodeDef], ctx: NodeContext, exclusive: bool) -> bool:
        """Start the ready nodes that are (not) exclusive; whether any settled at once."""
        heads_left = any(n.id in self._head for n in pending)
        ready = [
            n
            for n in pending
            if (n.kind in self.exclusive) == exclusive
            and all(p in ctx.results for p in ctx.graph.parents(n.id))
            and (not heads_left or n.id in self._head)
        ]
        settled = False
        for node in sorted(ready, key=lambda n: self._priority[n.id]):
            if len(self._running) >= self.executor.slots or self._alone():
                break
            skip = self._upstream_skip(node, ctx)
            if skip is None and self._running and not self._fits(node):
                continue  # waits for memory, neither keyed nor timed until it starts
            if node.id not in self._begun:
                self._begun.add(node.id)
                for instrument in self.instruments:
                    instrument.before(node)
            result = skip or self._handle(node, ctx)
            if result is BUSY:
                continue
            pending.remove(node)
            if result is not None:
                settled = True
                self._record(node, result, ctx)
        return settled

    def _alone(self) -> bool:
        return any(s.node.kind in self.exclusive for s in self._running.values())

    def _record(self, node: NodeDef, result: NodeResult, ctx: NodeContext) -> None:
        ctx.results[node.id] = result
        ctx.held.finished(node.id, result.ok)
        for instrument in reversed(self.instruments):
            instrument.after(node, result)
        if node.id in self.stop_on and not result.ok:
            raise StopBuild(node.id, result, self.errors.get(node.id))

    def _upstream_skip(self, node: NodeDef, ctx: NodeContext) -> NodeResult | None:
        for p in ctx.graph.parents(node.id):
            r = ctx.results[p]
            if not r.ok:
                why = r.reason or ""
                if len(why) > _UPSTREAM_REASON_CHARS:
                    why = f"{why[:_UPSTREAM_REASON_CHARS].rstrip()} ... (in {p}'s result)"
                reason = f"upstream {p} {r.status}" + (f": {why}" if why else "")
                return NodeResult(status="skipped", reason=reason, install=r.install)
        return None

    def _handle(self, node: NodeDef, ctx: NodeContext) -> NodeResult | Busy | None:
        """The node's result when it needs no run (a skip, a failure to key it, a cache hit);
        BUSY when another build holds its key and this one runs other nodes (it must not
        wait for a key while it holds theirs); else None, with the node submitted."""
        kind = self.kinds[type(node)]
        key = self._keys.get(node.id)
        if key is None:
            keyed = self._key(node, kind, ctx)
            if isinstance(keyed, NodeResult):
                return keyed
            key = self._keys[node.id] = keyed
        hit = self.cache.get(key, block=not self._running)
        if hit is BUSY:
            return BUSY
        if hit is not None:
            out, doc = hit
            try:
                cached = NodeResult.model_validate(doc)
            except ValidationError:  # written by a build whose records differ: make it anew
                self.cache.evict(key)
            else:
                if cached.status != "failed":
                    return cached.model_copy(update={"status": "cached", "out": out, "key": key})
                if self.retry_failed:
                    self.cache.evict(key)  # run again; a new refusal is remembered anew
                else:
                    return cached.model_copy(update={"reason": cached.reason + _REMEMBERED_NOTE})
        scratch = self.cache.new_entry(key)
        self._running[node.id] = _Submitted(node, kind, key, scratch)
        self.executor.submit(node, kind, ctx, scratch / "out")
        log.debug(
            "%s started, %.0f MiB at its peak estimated", node.id, self._estimates.peak_mib(node)
        )
        return None

    def _fits(self, node: NodeDef) -> bool:
        """Whether the node's estimated peak fits beside the running nodes (no gate: yes);
        a node held back says so, with the figures, once (at info for the build's first)."""
        if self.gate is None:
            return True
        need = self._estimates.peak_mib(node)
        growth = 0.0
        for nid, running in self._running.items():  # what each may still add to its peak
            used = self.executor.resident_mib(nid) or 0
            growth += max(0.0, self._estimates.peak_mib(running.node) - used)
        short = self.gate.shortfall(need, growth)
        if short is None:
            return True
        if node.id not in self._held:
            level = logging.DEBUG if self._held else logging.INFO
            self._held.add(node.id)
            log.log(
                level,
                "%s waits for memory: its peak is estimated at %.0f MiB; %d MiB available, "
                "%.0f MiB of it kept for the growth of the %d running node(s) (%s), %d MiB "
                "margin: %d MiB short; it starts once a running node finishes",
                node.id, need, short[1], growth, len(self._running),
                ", ".join(self._running), self.gate.margin_mib, short[0],
            )  # fmt: skip
        return False

    def _key(self, node: NodeDef, kind: NodeKind[Any], ctx: NodeContext) -> str | NodeResult:
        """The node's cache key, or why it has none (cannot run here, cannot be keyed)."""
        try:
            missing = kind.skip(node, ctx)
        except Exception as exc:
            self.errors[node.id] = exc
            reason = f"cannot tell whether it can run here: {short_message(exc)}"
            return NodeResult(status="failed", reason=reason)
        if missing is not None:
            return NodeResult(status="skipped", reason=missing.reason, install=missing.install)
        try:
            material = kind.key(node, ctx)
        except Exception as exc:
            self.errors[node.id] = exc
            return NodeResult(
                status="failed", reason=f"cannot compute cache key: {short_message(exc)}"
            )
        return sha256_json(
            {
                "kind": node.kind,
                "node_version": kind.version,
                "tool": __version__,
                "material": material,
                "parents": {p: ctx.results[p].digest for p in ctx.graph.parents(node.id)},
            }
        )

    def _finish(self, submitted: _Submitted, run: NodeRun, ctx: NodeContext) -> None:
        """Commit a node's output to the cache (or discard its scratch) and record it."""
        node, key, scratch = submitted.node, submitted.key, submitted.scratch
        if run.error is not None:
            self.errors[node.id] = run.error
        if run.output is None:
            failure = run.failure or NodeResult(status="failed", reason="no output")
            failure = failure.model_copy(update={"key": key})
            if run.repeatable and node.kind in self.remember:
                shutil.rmtree(scratch / "out")  # what it wrote before failing is no output
                (scratch / "out").mkdir()
                self.cache.commit(key, scratch, failure.model_dump(mode="json", exclude={"out"}))
            else:
                self.cache.discard(scratch)
            self._record(node, failure, ctx)
            return
        digest = sha256_json(
            {
                "files": dir_digest(scratch / "out"),
                "output": submitted.kind.digest_material(run.output),
            }
        )
        result = NodeResult(status="ran", output=run.output, digest=digest, key=key)
        out = self.cache.commit(key, scratch, result.model_dump(mode="json", exclude={"out"}))
        self._record(node, result.model_copy(update={"out": out}), ctx)
