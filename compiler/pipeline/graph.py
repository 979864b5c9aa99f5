"""The build graph: typed node definitions, built once from the config.

normalize -> data -> reference; per variant a chain of passes (identical prefixes are one
node) -> compile -> verify. Every node id is made here, once; a node names the nodes it reads
(`source`, `compile`, ...) by their ids, and `BuildGraph.artifacts` lines up each artifact
with its compile and verify nodes, so no one rebuilds an id from strings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import networkx as nx

from compiler.core.hashing import sha256_json
from compiler.pipeline.config import BuildConfig, VariantConfig
from passes.registry import PASSES, PassConfig
from targets.registry import get_backend

__all__ = [
    "ArtifactNodes",
    "BuildGraph",
    "CompileNode",
    "DataNode",
    "NodeDef",
    "NodeGraph",
    "NormalizeNode",
    "PassNode",
    "ReferenceNode",
    "VerifyNode",
    "build_graph",
    "describe_graph",
]


@dataclass(frozen=True, eq=False)
class NodeDef:
    """A node of the graph. `kind` names it in logs and cache keys; `parents` are the nodes
    whose outputs it reads (its edges, and the digests its cache key includes). Among nodes
    ready at the same time, a lower `stage` runs first (so all passes run before compiles)."""

    kind: ClassVar[str]
    stage: ClassVar[int] = 0
    id: str

    @property
    def parents(self) -> tuple[str, ...]:
        return ()

    def details(self) -> str:
        """What distinguishes this node in `--print-dag`, after its id and kind."""
        return ""


@dataclass(frozen=True, eq=False)
class NormalizeNode(NodeDef):
    kind: ClassVar[str] = "normalize"


@dataclass(frozen=True, eq=False)
class DataNode(NodeDef):
    kind: ClassVar[str] = "data"
    stage: ClassVar[int] = 1
    normalize: str

    @property
    def parents(self) -> tuple[str, ...]:
        return (self.normalize,)


@dataclass(frozen=True, eq=False)
class ReferenceNode(NodeDef):
    kind: ClassVar[str] = "reference"
    stage: ClassVar[int] = 2
    normalize: str
    data: str

    @property
    def parents(self) -> tuple[str, ...]:
        return (self.normalize, self.data)


@dataclass(frozen=True, eq=False)
class PassNode(NodeDef):
    """One pass over `source`'s model. `target` is set only for target-dependent passes. The
    data and reference nodes are parents (their digests enter the key) only when the pass
    declares it reads them."""

    kind: ClassVar[str] = "pass"
    stage: ClassVar[int] = 3
    config: PassConfig
    target: str | None
    source: str
    normalize: str
    data: str
    reference: str
    uses_calibration: bool = False
    uses_reference: bool = False

    @property
    def parents(self) -> tuple[str, ...]:
        return (
            self.source,
            *((self.data,) if self.uses_calibration else ()),
            *((self.reference,) if self.uses_reference else ()),
        )

    def details(self) -> str:
        params = self.config.model_dump(mode="json", exclude={"name"})
        return " " + json.dumps(params, sort_keys=True) if params else ""


@dataclass(frozen=True, eq=False)
class CompileNode(NodeDef):
    """The backend build of one variant from `source`'s model file."""

    kind: ClassVar[str] = "compile"
    stage: ClassVar[int] = 4
    target: str
    variant: str
    config: VariantConfig
    source: str
    normalize: str
    data: str
    # the backend reads calibration data, or judges its builds on the samples (a parent then)
    uses_calibration: bool = False

    @property
    def parents(self) -> tuple[str, ...]:
        return (self.source, self.data) if self.uses_calibration else (self.source,)

    def details(self) -> str:
        c = self.config
        return f" backend={c.compile.backend} precision={c.precision}"


@dataclass(frozen=True, eq=False)
class VerifyNode(NodeDef):
    """Parity and latency of `compile`'s artifact against the reference, on this host."""

    kind: ClassVar[str] = "verify"
    stage: ClassVar[int] = 5
    target: str
    variant: str
    config: VariantConfig
    compile: str
    normalize: str
    data: str
    reference: str

    @property
    def parents(self) -> tuple[str, ...]:
        return (self.compile, self.reference, self.data)


@dataclass(frozen=True, eq=False)
class ArtifactNodes:
    """One artifact of the package and the nodes that make and measure it."""

    id: str  # the manifest's artifact id, "<target>/<variant>"
    target: str
    variant: str
    config: VariantConfig
    compile: CompileNode
    verify: VerifyNode


_N = TypeVar("_N", bound=NodeDef)


class NodeGraph:
    """A DAG of node definitions: what the scheduler walks. An edge marked `handoff` carries
    the parent's in-memory model to the child (the child takes it instead of reading a file)."""

    def __init__(self) -> None:
        self._g = nx.DiGraph()

    def add(self, node: _N, handoff_from: str | None = None) -> _N:
        """Add `node` with edges from its parents; a node already present is kept (interned)."""
        if node.id in self._g:
            return self.typed(node.id, type(node))
        missing = [p for p in node.parents if p not in self._g]
        if missing:
            raise ValueError(f"node {node.id}: parents {missing} are not in the graph")
        self._g.add_node(node.id, node=node)
        for p in node.parents:
            self._g.add_edge(p, node.id, handoff=p == handoff_from)
        return node

    def __contains__(self, nid: object) -> bool:
        return nid in self._g

    def __iter__(self) -> Iterator[NodeDef]:
        return (self._g.nodes[n]["node"] for n in self._g)

    def __len__(self) -> int:
        return len(self._g)

    def node(self, nid: str) -> NodeDef:
        node: NodeDef = self._g.nodes[nid]["node"]
        return node

    def typed(self, nid: str, of: type[_N]) -> _N:
        node = self.node(nid)
        if not isinstance(node, of):
            raise TypeError(f"node {nid} is a {type(node).__name__}, not a {of.__name__}")
        return node

    def parents(self, nid: str) -> list[str]:
        return sorted(self._g.predecessors(nid))

    def children(self, nid: str) -> list[str]:
        return sorted(self._g.successors(nid))

    def ancestors(self, nid: str) -> set[str]:
        """Every node `nid` depends on, however far up."""
        return set(nx.ancestors(self._g, nid))

    def handoff_children(self, nid: str) -> list[str]:
        """The children that take `nid`'s model in memory."""
        return sorted(c for c in self._g.successors(nid) if self._g.edges[nid, c]["handoff"])

    def order(self) -> list[NodeDef]:
        """Topological order; among ready nodes, lowest stage first, then by id."""

        def key(nid: str) -> tuple[int, str]:
            return self.node(nid).stage, nid

        return [self.node(n) for n in nx.lexicographical_topological_sort(self._g, key=key)]

    def is_acyclic(self) -> bool:
        return bool(nx.is_directed_acyclic_graph(self._g))


class BuildGraph(NodeGraph):
    """The graph of one build: the shared head nodes, the pass chains, and per artifact a
    compile and a verify node. `target_notes` says why a target has no artifacts."""

    def __init__(self) -> None:
        super().__init__()
        self.normalize = self.add(NormalizeNode("normalize"))
        self.data = self.add(DataNode("data", normalize=self.normalize.id))
        self.reference = self.add(
            ReferenceNode("reference", normalize=self.normalize.id, data=self.data.id)
        )
        self.artifacts: list[ArtifactNodes] = []
        self.target_notes: dict[str, str] = {}

    def add_pass(self, source: str, config: PassConfig, target: str) -> PassNode:
        """The node running `config` on `source`'s model; one node per identical prefix."""
        cls = PASSES[config.name]
        node_target = target if cls.target_dependent else None
        ident = sha256_json(
            {"parent": source, "pass": config.model_dump(mode="json"), "target": node_target}
        )[:8]
        prefix = f"{target}:" if cls.target_dependent else ""
        node = PassNode(
            id=f"{prefix}{config.name}#{ident}",
            config=config,
            target=node_target,
            source=source,
            normalize=self.normalize.id,
            data=self.data.id,
            reference=self.reference.id,
            uses_calibration=cls.uses_calibration,
            uses_reference=cls.uses_reference,
        )
        return self.add(node, handoff_from=source)

    def add_artifact(self, target: str, variant: str, config: VariantConfig) -> ArtifactNodes:
        source = self.normalize.id
        for pcfg in config.passes:
            source = self.add_pass(source, pcfg, target).id
        aid = f"{target}/{variant}"
        backend = get_backend(config.compile.backend)
        compile_node = self.add(
            CompileNode(
                id=f"{aid}:compile",
                target=target,
                variant=variant,
                config=config,
                source=source,
                normalize=self.normalize.id,
                data=self.data.id,
                uses_calibration=backend.uses_calibration or backend.judged(config.compile),
            )
        )
        verify_node = self.add(
            VerifyNode(
                id=f"{aid}:verify",
                target=target,
                variant=variant,
                config=config,
                compile=compile_node.id,
                normalize=self.normalize.id,
                data=self.data.id,
                reference=self.reference.id,
            )
        )
        artifact = ArtifactNodes(aid, target, variant, config, compile_node, verify_node)
        self.artifacts.append(artifact)
        self.artifacts.sort(key=lambda a: a.compile.id)
        return artifact


def build_graph(config: BuildConfig, targets: Iterable[str]) -> BuildGraph:
    """The graph for `targets`' enabled variants; a target with none gets a note instead."""
    g = BuildGraph()
    for target in targets:
        tcfg = config.targets.get(target)
        variants = (tcfg.variants if tcfg else None) or {}
        enabled = {k: v for k, v in variants.items() if v.enabled}
        if not enabled:
            g.target_notes[target] = (
                f"no variants for target '{target}' in pipeline "
                f"'{tcfg.pipeline if tcfg else 'default'}'"
            )
        for name, variant in sorted(enabled.items()):
            g.add_artifact(target, name, variant)
    return g


def describe_graph(g: BuildGraph) -> list[str]:
    """Lines for --print-dag: each node with its parents, in execution order."""
    lines = []
    for node in g.order():
        parents = g.parents(node.id)
        arrow = f"  <- {', '.join(parents)}" if parents else ""
        lines.append(f"{node.id} [{node.kind}]{node.details()}{arrow}")
    lines += [f"{target}: {note}" for target, note in g.target_notes.items()]
    return lines
