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
"""

from __future__ import annotations

import traceback
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from compiler import __version__
from compiler.core.errors import BackendUnavailable, CompilePkgError, short_message
from compiler.core.hashing import dir_digest, sha256_json
from compiler.core.records import NodeResult
from compiler.pipeline.cache import Cache
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


class Scheduler:
    """Runs graphs with `kinds`, `cache`, and `instruments` around every node; stops the run
    when a node in `stop_on` fails or is skipped."""

    def __init__(
        self,
        kinds: Mapping[type[NodeDef], NodeKind[Any]],
        cache: Cache,
        instruments: Sequence[Instrument] = (),
        stop_on: Collection[str] = (),
    ) -> None:
        self.kinds = kinds
        self.cache = cache
        self.instruments = tuple(instruments)
        self.stop_on = frozenset(stop_on)
        self.errors: dict[str, BaseException] = {}  # node id -> what a failed node raised

    def run(self, ctx: NodeContext) -> dict[str, NodeResult]:
        """Every node of `ctx.graph`, in order; results land in `ctx.results` as they finish."""
        unknown = sorted({type(n).__name__ for n in ctx.graph if type(n) not in self.kinds})
        if unknown:
            raise TypeError(f"no node kind registered for {unknown}")
        for node in ctx.graph.order():
            for instrument in self.instruments:
                instrument.before(node)
            result = self._upstream_skip(node, ctx) or self._handle(node, ctx)
            ctx.results[node.id] = result
            ctx.held.finished(node.id, result.ok)
            for instrument in reversed(self.instruments):
                instrument.after(node, result)
            if node.id in self.stop_on and not result.ok:
                raise StopBuild(node.id, result, self.errors.get(node.id))
        return ctx.results

    def _upstream_skip(self, node: NodeDef, ctx: NodeContext) -> NodeResult | None:
        for p in ctx.graph.parents(node.id):
            r = ctx.results[p]
            if not r.ok:
                reason = f"upstream {p} {r.status}" + (f": {r.reason}" if r.reason else "")
                return NodeResult(status="skipped", reason=reason, install=r.install)
        return None

    def _handle(self, node: NodeDef, ctx: NodeContext) -> NodeResult:
        kind = self.kinds[type(node)]
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
        key = sha256_json(
            {
                "kind": node.kind,
                "node_version": kind.version,
                "tool": __version__,
                "material": material,
                "parents": {p: ctx.results[p].digest for p in ctx.graph.parents(node.id)},
            }
        )
        hit = self.cache.get(key)
        if hit is not None:
            out, doc = hit
            try:
                cached = NodeResult.model_validate(doc)
            except ValidationError:  # written by a build whose records differ: make it anew
                self.cache.evict(key)
            else:
                return cached.model_copy(update={"status": "cached", "out": out, "key": key})
        return self._execute(node, kind, ctx, key)

    def _execute(
        self, node: NodeDef, kind: NodeKind[Any], ctx: NodeContext, key: str
    ) -> NodeResult:
        scratch = self.cache.new_entry(key)
        try:
            output = kind.run(node, ctx, scratch / "out")
        except BackendUnavailable as exc:  # missing library or hardware: a skip, with how to get it
            self.errors[node.id] = exc
            self.cache.discard(scratch)
            reason = f"{exc.backend} unavailable: {exc.reason}"
            return NodeResult(status="skipped", reason=reason, install=exc.install, key=key)
        except CompilePkgError as exc:
            self.errors[node.id] = exc
            self.cache.discard(scratch)
            return NodeResult(status="failed", reason=str(exc), key=key)
        except Exception as exc:
            self.errors[node.id] = exc
            self.cache.discard(scratch)
            return NodeResult(
                status="failed",
                reason=short_message(exc),
                key=key,
                traceback=traceback.format_exc(limit=8),
            )
        digest = sha256_json(
            {"files": dir_digest(scratch / "out"), "output": kind.digest_material(output)}
        )
        result = NodeResult(status="ran", output=output, digest=digest, key=key)
        out = self.cache.commit(key, scratch, result.model_dump(mode="json", exclude={"out"}))
        return result.model_copy(update={"out": out})
