"""verify: parity of a compiled artifact against the reference outputs (each output judged by
its kind, and the task metric on the labelled samples when the config names one), and its
latency next to the reference model, on this host: with the runtime settings a short sweep
adopted when `tuning` is on, and items/s at the `serving` batch sizes. Its output is
measurements: nothing builds on them, so they stay out of its digest."""

from __future__ import annotations

from pathlib import Path

from compiler.core.feeds import read_feeds_npz
from compiler.core.parity import read_scores
from compiler.core.records import (
    CompileOutput,
    DataOutput,
    NodeOutput,
    NormalizeOutput,
    VerifyOutput,
)
from compiler.core.task import metric_digest
from compiler.measure.verify import (
    ServeMeasures,
    unverified_on_few_rows,
    unverified_on_generated,
    verify_artifact,
)
from compiler.pipeline.graph import VerifyNode
from compiler.pipeline.nodes.base import KeyMaterial, Kind
from compiler.pipeline.nodes.context import NodeContext
from compiler.pipeline.variant import judged_precision
from passes.registry import PASSES

__all__ = ["VerifyKind"]


def _tuning_s(ctx: NodeContext) -> float:
    """The sweep's time cap per artifact; 0: no sweep."""
    return ctx.config.tuning.seconds_per_artifact if ctx.config.tuning.enabled else 0.0


class VerifyKind(Kind[VerifyNode]):
    # 5: latency in worker processes, with the speedup interval; 6: parity by output kind, task;
    # 7: lossy artifacts judged or calibrated on generated data are not verified; 8: lossy
    # against the reference (a quantized source's int8 artifacts are not), few-rows rule;
    # 9: runtime settings swept (tuning), throughput at the serving batch sizes
    # 10: the task check is paired; 11: the task decides lossy artifacts (task.py); 12: a
    # quantized model's softmax (on an 8-bit grid) is judged as probabilities (parity.py);
    # 13: a variant lossier than the reference in its own right (bf16 float ops over a
    # quantized source's int8) is lossy, though its artifact's precision reads int8; 14:
    # channels of mixed scale are judged one by one (parity.py); 16 (15 was a reverted
    # change): COCO-sized heads too (up to 1024 channels; rank 4+ on axis 1 only); 17: an
    # output whose length differs between samples (data-sized) is compared, not an error,
    # and one whose length an artifact changes says what judges it (a task metric); outputs
    # empty on every sample (a detector on generated data) give no verdict; 18: on generated
    # samples, an artifact judged as not lossy but recorded lossy (a quantized source on
    # another backend) keeps a pass only within the fp32 tolerance; 19: the task decides
    # only the outputs its metric reads (task.py); 20: probabilities that are no
    # distribution (a Sigmoid's) are also judged as decisions at 0.5 (parity.py); 21:
    # OpenVINO's runner can run a shape seen twice on a compile of its own (off by default);
    # 22: a dense map's score channels are judged as decisions at 0.5 (parity.py); 23:
    # OpenVINO's runner returns an output that passes an input through (the runner's code is
    # not in the key: a runner fix bumps this); 24: OpenVINO's runner copies its outputs out
    # once (its latency changes); 25: latency workers size their blocks by runs after the
    # warm-up, not by it (a warm-up that held a compile made 3-run blocks); 26: an artifact
    # this host cannot run says "cannot run on the build host (...)", not "here": serving
    # hosts read the record; 27: the reference's own NaN and infinities agree where the
    # artifact holds them (parity.py); 28: index outputs are judged by decided agreement
    # with the reference's scores (reference.py writes them)
    version = "29"

    def key(self, node: VerifyNode, ctx: NodeContext) -> KeyMaterial:
        h = ctx.host
        return {
            "host": {
                "arch": h.arch,
                "cpu": h.cpu_model,
                "cpus": h.cpu_count,
                "isa": h.isa,
                "gpus": [g.model_dump() for g in h.gpus],
                "runtimes": h.runtimes,
            },
            "policy": ctx.config.policy().model_dump(mode="json", include={"parity", "latency"}),
            "precision": node.config.precision,
            "source_precision": ctx.output(node.normalize, NormalizeOutput).precision,
            "contract": ctx.contract_key(node.normalize),  # the outputs' kinds judge parity
            "task_metric": metric_digest(task.metric) if (task := ctx.config.parity.task) else "",
            "tuning_s": _tuning_s(ctx),
            "batch_sizes": ctx.config.serving.batch_sizes,
        }

    def run(self, node: VerifyNode, ctx: NodeContext, out: Path) -> VerifyOutput:
        built = ctx.output(node.compile, CompileOutput)
        policy = ctx.config.policy()
        measured = verify_artifact(
            backend=built.backend,
            runtime=built.runtime,
            requirements=built.requirements,
            portable=built.portable,
            deferred=built.status == "deferred",
            artifact_dir=ctx.out_dir(node.compile),
            precision=built.precision,  # int8 for a quantized source whatever the variant
            contract=ctx.contract(node.normalize),
            inputs=ctx.feeds(node.data, "samples"),
            ref_outputs=read_feeds_npz(ctx.out_dir(node.reference) / "outputs.npz"),
            scores=read_scores(ctx.out_dir(node.reference)),
            ref_model=ctx.model_path(node.normalize),
            parity=policy.parity,
            latency=policy.latency,
            host=ctx.host,
            labels=ctx.labels(node.data) if policy.parity.task else None,
            serve=ServeMeasures(
                tuning_s=_tuning_s(ctx),
                batch_sizes=tuple(ctx.config.serving.batch_sizes),
                accepts=built.contract,
            ),
        )
        data = ctx.output(node.data, DataOutput)
        calibrated = any(PASSES[p.name].uses_calibration for p in node.config.passes)
        # lossy only against the reference (pipeline/variant.py, judged_precision)
        reference = ctx.output(node.normalize, NormalizeOutput).precision
        precision = judged_precision(built.precision, node.config.precision, reference)
        measured = unverified_on_generated(
            measured, precision, data.generated, calibrated, policy.parity
        )
        return unverified_on_few_rows(measured, precision)

    def digest_material(self, output: NodeOutput) -> object:
        return {}
