"""The node kinds of a build, one per node-definition type (the scheduler's registry)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compiler.pipeline.graph import (
    CompileNode,
    DataNode,
    NodeDef,
    NormalizeNode,
    PassNode,
    ReferenceNode,
    VerifyNode,
)
from compiler.pipeline.nodes.base import NodeKind
from compiler.pipeline.nodes.compile import CompileKind
from compiler.pipeline.nodes.data import DataKind
from compiler.pipeline.nodes.normalize import NormalizeKind
from compiler.pipeline.nodes.passes import PassKind
from compiler.pipeline.nodes.reference import ReferenceKind
from compiler.pipeline.nodes.verify import VerifyKind

__all__ = ["KINDS"]

KINDS: Mapping[type[NodeDef], NodeKind[Any]] = {
    NormalizeNode: NormalizeKind(),
    DataNode: DataKind(),
    ReferenceNode: ReferenceKind(),
    PassNode: PassKind(),
    CompileNode: CompileKind(),
    VerifyNode: VerifyKind(),
}
