"""The in-process executor: each node runs in the build's own process, one at a time, in the
order it was submitted (for debugging: breakpoints and tracebacks work as usual, and passes
hand the next pass their model in memory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.pipeline.executors.base import NodeRun, run_node
from compiler.pipeline.graph import NodeDef
from compiler.pipeline.nodes.base import NodeKind
from compiler.pipeline.nodes.context import NodeContext

__all__ = ["InProcessExecutor"]


class InProcessExecutor:
    slots = 1

    def __init__(self) -> None:
        self._queue: list[tuple[NodeDef, NodeKind[Any], NodeContext, Path]] = []

    def submit(self, node: NodeDef, kind: NodeKind[Any], ctx: NodeContext, out: Path) -> None:
        self._queue.append((node, kind, ctx, out))

    def resident_mib(self, node_id: str) -> int | None:
        return None  # one node at a time: nothing runs beside the next

    def wait(self) -> list[tuple[str, NodeRun]]:
        node, kind, ctx, out = self._queue.pop(0)
        return [(node.id, run_node(kind, node, ctx, out))]

    def close(self) -> None:
        self._queue.clear()
