"""bf16 with the layers it cannot compute kept in f32, chosen at build by the package's gate.

OpenVINO's CPU plugin runs a layer whose IR carries the `precise` runtime attribute (what C++
calls `ov::disable_fp16_compression`) in f32 under a bf16 inference precision, and the rest in
bf16. The marks live in the IR, so serving compiles the artifact exactly as built and
targets/openvino/runtime.py needs nothing new. Python cannot create that attribute on a node
(a string under its key is a plain string the plugin ignores), so the marks are written into
the saved model.xml, as OpenVINO itself serializes them.

Which layers: bf16 keeps 8 significant bits, so what it loses depends on where the values
sit: a layer fed raw, offset or wide-ranged inputs loses most, early, and the error travels
through everything after it. Measured on the AMX host (2026-12-02) on layout_cdla (PicoDet,
102 conv layers, 16 labelled pages, the benchmark's task bound `max_drop: 0`): bf16
throughout lost two of the reference's matched regions (task 0.8235 vs 0.8462) at 11.8 ms
against f32's 24.4 ms; its first 4 conv layers in f32 scored as the reference at 12.5 ms.
Its last 1-8 layers, the 2-20 layers whose own output error grew most over their inputs',
and the 5-20 with the largest output error did not restore it. So the candidates are runs of
layers from the inputs and from the outputs, doubling: the first k, then the last k, for k =
1, 2, 4 ... up to `limit` and at most half the layers; the first the gate passes is kept.
bf16 throughout is judged on all the labelled samples, as its verdict will be (which fits
nothing); a search runs only where it fails there, and chooses on the first half of them,
or on the other half where bf16 throughout passes on the first (passes/accuracy.py `Gates`,
as the int8 searches), the rest held out for the verdict. Each candidate costs one
compile and one run over those samples.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from targets.base import Judge
from targets.openvino.runtime import OpenVinoArtifact, compile_ir, import_openvino

__all__ = ["FloatSearch", "compute_layers", "keep_in_f32", "mark_precise"]

# the layers that compute (and cost) anything: everything else follows their precision
_COMPUTE = (
    "Convolution",
    "GroupConvolution",
    "ConvolutionBackpropData",
    "GroupConvolutionBackpropData",
    "MatMul",
)
_BF16 = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"}


@dataclass(frozen=True)
class FloatSearch:
    """What the search kept in f32 (empty: nothing) and why, for the artifact's notes."""

    kept: list[str]
    note: str


def compute_layers(model: Any) -> list[str]:
    """The names of an `openvino.Model`'s conv and matmul layers, inputs first."""
    return [
        op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in _COMPUTE
    ]


def mark_precise(xml: Path, names: Collection[str], out: Path) -> None:
    """Write `xml` to `out` with the layers `names` marked to run in f32 (module docstring);
    `out` may be `xml`. A name the IR does not have is an error: the marks would be lost."""
    tree = ET.parse(xml)
    wanted, found = set(names), set()
    for layer in tree.getroot().iter("layer"):
        if layer.get("name") not in wanted:
            continue
        found.add(layer.get("name"))
        info = layer.find("rt_info")
        if info is None:
            info = ET.Element("rt_info")
            layer.insert(1 if layer.find("data") is not None else 0, info)
        if not any(a.get("name") == "precise" for a in info.iter("attribute")):
            ET.SubElement(info, "attribute", name="precise", version="0")
    missing = sorted(wanted - found)
    if missing:
        raise ValueError(f"{xml.name} has no layers {missing[:5]}")
    tree.write(out, encoding="utf-8", xml_declaration=True)


def _candidates(layers: Sequence[str], limit: int) -> list[tuple[str, list[str]]]:
    out, k = [], 1
    while k <= min(limit, len(layers) // 2):
        out += [(f"the first {k}", list(layers[:k])), (f"the last {k}", list(layers[-k:]))]
        k *= 2
    return out


def _run(
    xml: Path, weights: Path, feeds: Sequence[dict[str, Any]], outputs: Sequence[str]
) -> list[dict[str, Any]] | None:
    """The IR compiled bf16 on `feeds`; None where this CPU compiles it f32."""
    Core = import_openvino().Core  # noqa: N806

    compiled = compile_ir(Core().read_model(str(xml), str(weights)), _BF16)
    if compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() != "bf16":
        return None
    runner = OpenVinoArtifact(compiled, outputs)
    try:
        return [runner.run(f) for f in feeds]
    finally:
        runner.close()


def keep_in_f32(
    xml: Path, judge: Judge, outputs: Sequence[str], limit: int, scratch: Path
) -> FloatSearch:
    """Judge the IR at `xml` in bf16 on all the judge's samples; where it fails, mark in
    `xml` the first run of layers (module docstring) whose f32 makes it pass on the share of
    them the search chooses on (`judge.share`: where bf16 throughout fails)."""
    Core = import_openvino().Core  # noqa: N806

    weights = xml.with_suffix(".bin")
    ran = _run(xml, weights, judge.feeds, outputs)
    if ran is None:
        return FloatSearch([], "bf16 not judged at build: this CPU compiles bf16 as f32")
    plain = judge(ran)
    whole = f"{len(judge.feeds)} samples"
    if plain.passed:
        return FloatSearch([], f"bf16 throughout passed the bf16 gate at build on {whole}")
    failed = f"bf16 throughout failed the bf16 gate at build on {whole} ({plain.summary})"
    share = judge.share(ran)
    if share is None:
        return FloatSearch(
            [], f"{failed} but passed on each share of them a search chooses on: no search ran"
        )
    layers = compute_layers(Core().read_model(str(xml), str(weights)))
    candidates = _candidates(layers, limit)
    chosen_on = f" on {share.where}" if share.where else ""
    for i, (which, names) in enumerate(candidates):
        trial = scratch / f"float-{i}.xml"
        mark_precise(xml, names, trial)
        tried = _run(trial, weights, judge.feeds[share.start : share.stop], outputs)
        result = share.judge(tried) if tried is not None else None
        if result is not None and result.passed:
            mark_precise(xml, names, xml)
            shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            return FloatSearch(
                names,
                f"{len(names)} of {len(layers)} conv/matmul layers kept in f32 ({which}: "
                f"{shown}): {failed}; with them in f32 it passed{chosen_on} ({result.summary})",
            )
    return FloatSearch(
        [],
        f"{failed}; none of {len(candidates)} runs of up to {min(limit, len(layers) // 2)} "
        f"layers from the inputs or the outputs kept in f32 passed it{chosen_on}: bf16 "
        "throughout, for the verdict to judge",
    )
