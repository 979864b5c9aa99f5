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
every node that is ready (its parents done, a slot free), the node's key held and a scratch
folder to write, and commits what comes back. A node whose kind is `exclusive` runs alone
(verify measures latency on the host's cores). The results are the same whichever executor
ran them, and `ctx.results` ends in the graph's order.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from compiler import __version__
from compiler.core.errors import short_message
from compiler.core.hashing import dir_digest, sha256_json
from compiler.core.records import NodeResult
from compiler.pipeline.cache import BUSY, Busy, Cache
from compiler.pipeline.executors.base import Executor, NodeRun
from compiler.pipeline.executors.inprocess import InProcessExecutor
from compiler.pipeline.graph import NodeDef
from compiler.pipeline.instruments import Instrument
from compiler.pipeline.nodes.base import NodeKind
from compiler.pipeline.nodes.context import NodeContext

__all__ = ["Scheduler", "StopBuild"]


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


class Scheduler:
    """Runs graphs with `kinds`, `cache`, and `instruments` around every node, on `executor`
    (in this process by default); stops the run when a node in `stop_on` fails or is
    skipped. Nodes of the kinds in `exclusive` run with no other node beside them."""

    def __init__(
        self,
        kinds: Mapping[type[NodeDef], NodeKind[Any]],
        cache: Cache,
        instruments: Sequence[Instrument] = (),
        stop_on: Collection[str] = (),
        executor: Executor | None = None,
        exclusive: Collection[str] = (),
    ) -> None:
        self.kinds = kinds
        self.cache = cache
        self.instruments = tuple(instruments)
        self.stop_on = frozenset(stop_on)
        self.executor = executor or InProcessExecutor()
        self.exclusive = frozenset(exclusive)
        self.errors: dict[str, BaseException] = {}  # node id -> what a failed node raised
        self._running: dict[str, _Submitted] = {}
        self._begun: set[str] = set()  # nodes whose instruments have started
        self._keys: dict[str, str] = {}  # node id -> its cache key, once computed

    def run(self, ctx: NodeContext) -> dict[str, NodeResult]:
        """Every node of `ctx.graph`; results land in `ctx.results` as they finish."""
        unknown = sorted({type(n).__name__ for n in ctx.graph if type(n) not in self.kinds})
        if unknown:
            raise TypeError(f"no node kind registered for {unknown}")
        order = ctx.graph.order()
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
                    self._finish(self._running.pop(nid), run, ctx)
        finally:
            self.executor.close()
            for submitted in self._running.values():
                self.cache.discard(submitted.scratch)
            self._running.clear()
        done = {n.id: ctx.results[n.id] for n in order}
        ctx.results.clear()
        ctx.results.update(done)
        return ctx.results

    def _start_ready(self, pending: list[NodeDef], ctx: NodeContext) -> None:
        """Start pending nodes whose parents are done, in graph order, while slots are free.
        A node whose key another build holds waits while this build runs others."""
        for node in list(pending):
            if len(self._running) >= self.executor.slots or self._alone():
                return
            if any(p not in ctx.results for p in ctx.graph.parents(node.id)):
                continue
            if node.kind in self.exclusive and self._running:
                continue  # waits until nothing else runs
            if node.id not in self._begun:
                self._begun.add(node.id)
                for instrument in self.instruments:
                    instrument.before(node)
            result = self._upstream_skip(node, ctx) or self._handle(node, ctx)
            if result is BUSY:
                continue
            pending.remove(node)
            if result is not None:
                self._record(node, result, ctx)

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
                reason = f"upstream {p} {r.status}" + (f": {r.reason}" if r.reason else "")
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
                return cached.model_copy(update={"status": "cached", "out": out, "key": key})
        scratch = self.cache.new_entry(key)
        self._running[node.id] = _Submitted(node, kind, key, scratch)
        self.executor.submit(node, kind, ctx, scratch / "out")
        return None

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
            self.cache.discard(scratch)
            failure = run.failure or NodeResult(status="failed", reason="no output")
            self._record(node, failure.model_copy(update={"key": key}), ctx)
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
