"""What a node kind reads while it runs: the build's inputs, the host, its parents' results and
files, and the models earlier nodes of this run hold in memory for their children."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import onnx
from pydantic import BaseModel

from compiler.core.contract import Contract
from compiler.core.feeds import Feeds, read_feeds_npz, read_labels
from compiler.core.host import HostInfo
from compiler.core.records import DataOutput, DataSource, NodeResult, NormalizeOutput
from compiler.pipeline.config import BuildConfig
from compiler.pipeline.graph import NodeGraph
from compiler.pipeline.normalize import DATA_FILE, MODEL_FILE, load_onnx
from compiler.pipeline.userdata import LABELS_FILE

__all__ = ["BuildInputs", "Holdings", "NodeContext"]

_O = TypeVar("_O", bound=BaseModel)


@dataclass(frozen=True)
class BuildInputs:
    source_path: Path  # an ONNX file (torch sources are exported to one first)
    source_digest: str
    config: BuildConfig
    targets: tuple[str, ...]
    sample_data: Path | None = None
    calibration_data: Path | None = None
    # the local cache folder (--cache-dir when it is a folder): backends keep their own caches
    # in it (BuildRequest.cache_root); None: the default root. Never part of a key.
    cache_root: Path | None = None


class Holdings:
    """Models nodes of this run keep in memory for their `handoff` children, so a pass hands
    the next pass its ModelProto without a disk round trip (the disk copy is the cache entry).
    A holding is dropped once no child waits for it; a child that is not the last one waiting
    gets a copy, since passes may change the model they are given."""

    def __init__(self, graph: NodeGraph) -> None:
        self._graph = graph
        self._values: dict[str, onnx.ModelProto] = {}
        self._waiting: dict[str, set[str]] = {}

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._values)

    def put(self, nid: str, model: onnx.ModelProto) -> None:
        waiting = set(self._graph.handoff_children(nid))
        if waiting:
            self._values[nid], self._waiting[nid] = model, waiting

    def take(self, nid: str, taker: str) -> onnx.ModelProto | None:
        """`nid`'s model for `taker`, or None when this run holds none (read the file then)."""
        model = self._values.get(nid)
        if model is None:
            return None
        waiting = self._waiting[nid]
        waiting.discard(taker)
        if waiting:
            return copy.deepcopy(model)
        self.drop(nid)
        return model

    def finished(self, nid: str, ok: bool) -> None:
        """`nid` is done: its parents stop waiting for it, and a failed node holds nothing."""
        if not ok:
            self.drop(nid)
        for parent in self._graph.parents(nid):
            waiting = self._waiting.get(parent)
            if waiting is not None:
                waiting.discard(nid)
                if not waiting:
                    self.drop(parent)

    def drop(self, nid: str) -> None:
        self._values.pop(nid, None)
        self._waiting.pop(nid, None)


class NodeContext:
    """One run of a graph: the scheduler fills `results` and `held` as nodes finish; node
    kinds read their parents' outputs through the accessors below."""

    def __init__(self, inputs: BuildInputs, graph: NodeGraph, host: HostInfo) -> None:
        self.inputs = inputs
        self.graph = graph
        self.host = host
        self.results: dict[str, NodeResult] = {}
        self.held = Holdings(graph)
        # a folder of this build that every process running its nodes can read (the cache's
        # scratch, set by the scheduler): what a kind derives while keying a node and needs
        # again to run it goes there, never into the kind (key and run may be in different
        # processes)
        self.scratch: Path | None = None

    @property
    def config(self) -> BuildConfig:
        return self.inputs.config

    def output(self, nid: str, of: type[_O]) -> _O:
        return self.results[nid].expect(of)

    def out_dir(self, nid: str) -> Path:
        out = self.results[nid].out
        if out is None:
            raise ValueError(f"node {nid} has no output folder (status {self.results[nid].status})")
        return out

    def model_path(self, nid: str) -> Path:
        return self.out_dir(nid) / MODEL_FILE

    def contract(self, normalize: str) -> Contract:
        return self.output(normalize, NormalizeOutput).contract

    def contract_key(self, normalize: str, kinds: bool = True) -> object:
        """The contract as key material, for a node that reads it without `normalize` as a
        parent: a change in what normalize read off the graph (an output's kind, a dim's
        range) must reach that node's key even where the model bytes are the same.
        `kinds=False`: without the outputs' kinds, for a node they do not change (compile)."""
        dumped = self.contract(normalize).model_dump(mode="json")
        if not kinds:
            dumped["outputs"] = [{**o, "kind": None} for o in dumped["outputs"]]
        return dumped

    def feeds(self, data: str, which: Literal["samples", "calibration"]) -> list[Feeds]:
        return read_feeds_npz(self.out_dir(data) / f"{which}.npz")

    def labels(self, data: str) -> list[Any] | None:
        """The samples' labels (the labels.json the data node wrote: one per sample), or None
        when the user's data has none."""
        return read_labels(self.out_dir(data) / LABELS_FILE)

    def calibration_source(self, data: str) -> DataSource:
        """Where the calibration feeds come from (for a node that reads them, or may)."""
        result = self.results.get(data)
        return result.expect(DataOutput).calibration_source if result and result.ok else "generated"

    def model(self, source: str, taker: str) -> onnx.ModelProto:
        """`source`'s model for `taker`: the one this run holds in memory, else its file."""
        held = self.held.take(source, taker)
        return held if held is not None else load_onnx(self.model_path(source))

    def hold(self, nid: str, model: onnx.ModelProto, out: Path) -> None:
        """Keep `nid`'s model (already saved in `out`) for its children. A model saved with
        external data is not kept: saving moved its tensors out of the proto."""
        if not (out / DATA_FILE).exists():
            self.held.put(nid, model)
