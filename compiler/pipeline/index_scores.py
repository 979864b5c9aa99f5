"""The reference's scores behind outputs that are indices: an ArgMax's class, a TopK's k
best, the scores they were picked from. Judged by exact agreement alone, such an output
fails wherever a pick flips between classes the reference scores alike (a TopK's tail
ranks, all near zero in a confident classifier, come in any order from any two kernels): an
artifact that keeps every decision failed. With the reference's scores, a flip counts only
where the reference separates the two picks by more than `top1_tie` (compiler/core/parity.py
`index_agreement`), as decided top-1 does for class scores.

An output is an index output when it is a TopK's indices or an ArgMax/ArgMin's output, seen
through ops that keep its elements' order (Identity, Cast, Reshape, Squeeze, Unsqueeze,
Flatten), in the main graph. The scores tensor is the op's input. Normalize writes the model
returning those scores too (`write_scores_model`), and for each index output the reference
node writes, per sample, the scores as probabilities (`as_probabilities`)
arranged [positions, classes], and for each element of the output the row it was picked
from (compiler.core.parity.IndexScores, in SCORES_FILE beside the reference's outputs).
Where they would hold more than MAX_ELEMENTS values over the samples (a segmentation map's
per-pixel classes), none are kept and exact agreement judges the output.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from compiler.core.feeds import Feeds
from compiler.core.parity import IndexScores
from targets.onnxruntime.backend import reference_session

__all__ = [
    "MAX_ELEMENTS",
    "IndexSource",
    "as_probabilities",
    "index_scores",
    "index_sources",
    "reference_scores",
    "scores_model",
    "scores_of",
    "write_scores_model",
]

# scores kept over all samples, at most (float32: 16 MiB)
MAX_ELEMENTS = 1 << 22
SCORES_MODEL = "scores.onnx"  # normalize's model returning the scores too
SOURCES_FILE = "index_outputs.json"
_ORDER_KEEPING = frozenset({"Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten"})
_INTEGER = frozenset(
    {onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16,
     onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.UINT16,
     onnx.TensorProto.UINT32, onnx.TensorProto.UINT64}
)  # fmt: skip


@dataclass(frozen=True)
class IndexSource:
    """Where an index output's picks come from: the `scores` tensor, along `axis` (as the
    op states it: may be negative), the best being the largest (`largest`) or the least, and
    whether the op is a TopK (k picks per position) or an ArgMax/ArgMin (one)."""

    scores: str
    axis: int
    largest: bool
    topk: bool


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def index_sources(model: onnx.ModelProto) -> dict[str, IndexSource]:
    """Output name -> where its picks come from, for the integer outputs of the main graph
    that are a TopK's indices or an ArgMax/ArgMin's output (module docstring)."""
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output if o}
    found: dict[str, IndexSource] = {}
    for out in graph.output:
        if out.type.tensor_type.elem_type not in _INTEGER:
            continue
        value = out.name
        for _ in range(16):
            node = producers.get(value)
            if node is None:
                break
            if node.op_type in _ORDER_KEEPING and node.input:
                value = node.input[0]
                continue
            if node.op_type == "TopK" and len(node.output) > 1 and node.output[1] == value:
                found[out.name] = IndexSource(
                    node.input[0], _attr(node, "axis", -1), bool(_attr(node, "largest", 1)), True
                )
            elif node.op_type in ("ArgMax", "ArgMin") and _attr(node, "select_last_index", 0) == 0:
                found[out.name] = IndexSource(
                    node.input[0], _attr(node, "axis", 0), node.op_type == "ArgMax", False
                )
            break
    return found


def write_scores_model(model: onnx.ModelProto, folder: Path) -> None:
    """Where `model` has index outputs and no external data: SCORES_MODEL (`scores_model`)
    and SOURCES_FILE (where each output's picks come from) in `folder` (normalize's output,
    beside the model); nothing otherwise (a copy of a model over 2 GB is another 2 GB)."""
    sources = index_sources(model)
    if not sources or any(
        init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer
    ):
        return
    (folder / SCORES_MODEL).write_bytes(scores_model(model, sources).SerializeToString())
    doc = {name: dataclasses.asdict(source) for name, source in sorted(sources.items())}
    (folder / SOURCES_FILE).write_text(json.dumps(doc, indent=1, sort_keys=True))


def scores_of(
    folder: Path, output_names: Sequence[str], feeds: Sequence[Feeds]
) -> list[dict[str, IndexScores]] | None:
    """The reference's IndexScores of `feeds` from the scores model normalize wrote in
    `folder` (`write_scores_model`); None where it wrote none, where they do not fit, or where
    ONNX Runtime cannot run it (exact agreement judges then: never a failed build)."""
    if not (folder / SOURCES_FILE).is_file():
        return None
    doc = json.loads((folder / SOURCES_FILE).read_text())
    sources = {name: IndexSource(**fields) for name, fields in doc.items()}
    try:
        session = reference_session(folder / SCORES_MODEL)
        return reference_scores(session, output_names, sources, feeds)
    except Exception:  # noqa: BLE001 - see the docstring
        return None


def scores_model(model: onnx.ModelProto, sources: Mapping[str, IndexSource]) -> onnx.ModelProto:
    """A copy of `model` that also returns every scores tensor of `sources` (those not yet
    outputs): what the reference runs to write them."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    have = {o.name for o in copy.graph.output}
    for name in dict.fromkeys(s.scores for s in sources.values()):
        if name not in have:
            copy.graph.output.append(onnx.ValueInfoProto(name=name))
    return copy


def as_probabilities(scores: np.ndarray, largest: bool) -> np.ndarray:
    """Scores [positions, classes] as the probabilities `top1_tie` is measured in, the best
    the largest: values in [0, 1] are taken as they are (a sigmoid's, or a softmax's rows);
    others (logits) go through a softmax over the classes. For an ArgMin / TopK of the least,
    the scores are negated first (1 - p for probabilities)."""
    s = scores.astype(np.float64)
    finite = np.isfinite(s).all()
    if finite and s.size and (s >= 0).all() and (s <= 1).all():
        return s if largest else 1.0 - s
    s = np.where(np.isfinite(s), s, np.where(s > 0, 1e30, -1e30))
    z = s if largest else -s
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(z / z.sum(axis=1, keepdims=True))


def index_scores(
    scores: np.ndarray, indices: np.ndarray, source: IndexSource
) -> IndexScores | None:
    """The reference's `scores` behind its `indices` (one sample) as IndexScores: the scores
    as probabilities [positions, classes], and the row each element of the index output was
    picked from, in the output's element order; None where the output does not hold the op's
    indices in order (sizes that do not fit)."""
    if scores.ndim == 0:
        return None
    axis = source.axis % scores.ndim
    moved = np.moveaxis(scores, axis, -1)
    positions, classes = int(np.prod(moved.shape[:-1])), moved.shape[-1]
    if classes == 0 or positions == 0 or indices.size % positions:
        return None
    k = indices.size // positions
    if not source.topk and k != 1:
        return None
    rows = np.repeat(np.arange(positions, dtype=np.int32), k).reshape(*moved.shape[:-1], k)
    in_order = np.moveaxis(rows, -1, axis).reshape(
        -1
    )  # the op's output order, as the index output holds it
    probs = as_probabilities(moved.reshape(positions, classes), source.largest)
    return IndexScores(probs=probs.astype(np.float32), rows=in_order)


def reference_scores(
    session: object,
    output_names: Sequence[str],
    sources: Mapping[str, IndexSource],
    feeds: Sequence[Feeds],
) -> list[dict[str, IndexScores]] | None:
    """Per feed, each index output's IndexScores, from `session` (a session of
    `scores_model`); None where they would hold more than MAX_ELEMENTS values in all, or
    where an output's indices do not fit its scores."""
    names = list(output_names)
    wanted = [*names, *dict.fromkeys(s.scores for s in sources.values() if s.scores not in names)]
    out: list[dict[str, IndexScores]] = []
    total = 0
    for feed in feeds:
        values = dict(zip(wanted, session.run(wanted, feed), strict=True))  # type: ignore[attr-defined]
        per: dict[str, IndexScores] = {}
        for name, source in sources.items():
            found = index_scores(
                np.asarray(values[source.scores]), np.asarray(values[name]), source
            )
            if found is None:
                return None
            total += found.probs.size
            if total > MAX_ELEMENTS:
                return None
            per[name] = found
        out.append(per)
    return out
