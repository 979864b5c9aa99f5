"""The node-kind protocol: what the scheduler asks of each kind of node.

A kind says how to key a node (JSON-able material: its parameters and the library versions
that shape its output; the scheduler adds the kind, version and the parents' digests), whether
the node cannot run on this host (`skip`: why, and how to get what is missing), and how to run
it into an output folder, returning a typed record. Kinds never time or log themselves: the
scheduler's instruments do that around them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from compiler.core.records import Availability, NodeOutput
from compiler.pipeline.graph import NodeDef
from compiler.pipeline.nodes.context import NodeContext

__all__ = ["KeyMaterial", "Kind", "NodeKind"]

# What a cache key is made of: hashed, never read back by key.
KeyMaterial = Mapping[str, object]

_N = TypeVar("_N", bound=NodeDef, contravariant=True)
_D = TypeVar("_D", bound=NodeDef)


class NodeKind(Protocol[_N]):
    """One kind of node. `version` enters every key: bump it when the kind's output for the
    same inputs can change (its code or its output record)."""

    @property
    def version(self) -> str: ...

    def key(self, node: _N, ctx: NodeContext) -> KeyMaterial: ...

    def skip(self, node: _N, ctx: NodeContext) -> Availability | None: ...

    def run(self, node: _N, ctx: NodeContext, out: Path) -> NodeOutput: ...

    def digest_material(self, output: NodeOutput) -> object: ...


class Kind(Generic[_D]):
    """Defaults for the optional parts of `NodeKind`: every node can run here, and an output's
    digest covers its whole record."""

    version = "1"

    def skip(self, node: _D, ctx: NodeContext) -> Availability | None:
        return None

    def digest_material(self, output: NodeOutput) -> object:
        """The part of the output that describes what the node made; children key on it."""
        return output.model_dump(mode="json")
