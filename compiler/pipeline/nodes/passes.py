"""pass: one graph pass over its source's model. The model comes in memory from the pass
before it when that ran in this build (else from its cache entry) and is handed on the same
way; the saved file is the cache entry."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from compiler.core.feeds import Feeds
from compiler.core.parity import IndexScores
from compiler.core.records import PassOutput
from compiler.core.targets import TARGET_ARCH
from compiler.core.task import TASK_RULE, metric_digest
from compiler.core.tolerance import Tolerance
from compiler.pipeline.graph import PassNode
from compiler.pipeline.index_scores import scores_of
from compiler.pipeline.nodes.base import KeyMaterial, Kind
from compiler.pipeline.nodes.context import NodeContext
from compiler.pipeline.normalize import save_model
from passes.registry import PassContext, make_pass
from targets.onnxruntime.backend import reference_session

__all__ = ["PassKind", "gate_material", "pass_context"]


def _target_isa(target: str | None, ctx: NodeContext) -> tuple[str, ...]:
    """The host's ISA when the target runs on this host's CPU architecture (a gpu target's
    CPU features say nothing about the device); else nothing."""
    if target is None or target == "gpu":
        return ()
    return tuple(ctx.host.isa) if TARGET_ARCH[target] == ctx.host.arch else ()


class PassKind(Kind[PassNode]):
    version = "2"  # typed output records (PassOutput / CompileOutput)

    def key(self, node: PassNode, ctx: NodeContext) -> KeyMaterial:
        p = make_pass(node.config)
        return {
            "pass": p.name,
            "version": p.version,
            "params": node.config.model_dump(mode="json"),
            "target": node.target,
            "isa": list(_target_isa(node.target, ctx)) if p.target_dependent else None,
            "libs": p.libraries(),
            "gate": gate_material(p.precision, ctx) if p.uses_reference else None,
            "contract": ctx.contract_key(node.normalize),
        }

    def run(self, node: PassNode, ctx: NodeContext, out: Path) -> PassOutput:
        p = make_pass(node.config)
        model = ctx.model(node.source, node.id)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            scratch = Path(tmp)
            result = p(model, pass_context(ctx, node.normalize, node.data, node.target, scratch))
        save_model(result.model, out)
        ctx.hold(node.id, result.model, out)
        assert result.summary is not None  # Pass.__call__ fills it
        return PassOutput(record=result.summary)


def gate_material(precision: str | None, ctx: NodeContext) -> object:
    """What a reference-gated node judges its own output by: the tolerances of its output
    precision (None: a numerics-preserving pass may read any, so all of them), per precision
    and per output, and the task metric (whose labels come in through the data node's
    digest)."""
    policy = ctx.config.parity.policy()
    precisions = [precision] if precision is not None else sorted(policy.tolerances)
    return {
        "tolerances": {k: dataclasses.asdict(policy.tolerances[k]) for k in precisions},
        "outputs": {
            name: {k: dataclasses.asdict(t) for k, t in sorted(per.items()) if k in precisions}
            for name, per in sorted(policy.outputs.items())
        },
        "task": {
            **dataclasses.asdict(policy.task),
            "code": metric_digest(policy.task.metric),
            "rule": TASK_RULE,
        }
        if policy.task
        else None,
    }


def pass_context(
    ctx: NodeContext, normalize: str, data: str, target: str | None, scratch: Path
) -> PassContext:
    """What a node judging models against the package's reference reads: the contract of
    `normalize`'s model, `data`'s feeds and labels, the build's tolerances and task."""
    contract = ctx.contract(normalize)
    names = [o.name for o in contract.outputs]
    ref_model = ctx.model_path(normalize)
    session: list[object] = []

    def reference(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not session:
            session.append(reference_session(ref_model))
        return dict(zip(names, session[0].run(names, feeds), strict=True))  # type: ignore[attr-defined]

    def reference_scores(feeds: Sequence[Feeds]) -> list[dict[str, IndexScores]] | None:
        return scores_of(ctx.out_dir(normalize), names, feeds)

    policy = ctx.config.parity.policy()
    tolerances: dict[str, Tolerance] = dict(policy.tolerances)
    return PassContext(
        contract=contract,
        workdir=scratch,
        target=target,
        target_isa=_target_isa(target, ctx),
        calibration=lambda: ctx.feeds(data, "calibration"),
        calibration_source=ctx.calibration_source(data),
        reference=reference,
        reference_scores=reference_scores,
        tolerances=tolerances,
        output_tolerances=policy.outputs,
        task=policy.task,
        validation=lambda: ctx.feeds(data, "samples"),
        labels=lambda: ctx.labels(data),
        shared=_shared(ctx),
    )


def _shared(ctx: NodeContext) -> Path | None:
    """The build's scratch folder's `shared/`, made by the first node that asks; None where
    the build's scratch is not on this machine (a Ray node elsewhere: nothing is made there)."""
    if ctx.scratch is None or not ctx.scratch.is_dir():
        return None
    shared = ctx.scratch / "shared"
    shared.mkdir(exist_ok=True)
    return shared
