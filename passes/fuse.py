"""fuse: ONNX Runtime's offline graph optimization, plus its transformer fusions.

`basic` (constant folding, redundant node removal, Conv+BN/Add/Mul fusions) and `extended`
(GELU, LayerNorm, attention-style fusions into com.microsoft ops) are hardware-independent.
`all` (layout optimizations, NCHWc) bakes the build host's CPU into the graph and is refused
here: a model another backend or host will read must not carry it.

For BERT-like graphs, ONNX Runtime's Python transformer optimizer
(`onnxruntime.transformers.optimizer`) finds more than the C++ optimizer does: Attention,
SkipLayerNormalization, BiasGelu, EmbedLayerNormalization. `transformer: auto` runs it when
the graph has attention, decomposed LayerNorm or Erf (GELU) patterns (passes/graph_facts.py);
`require` makes the variant a transformer variant: a graph without the attention pattern
(MatMul -> Softmax -> MatMul) is NotApplicable (the artifact is skipped with the reason,
before any work), and so is one where the fusions fail. The record's `fused_ops` counts the
fused operators in the output (Attention, SkipLayerNormalization, Gelu/BiasGelu/FastGelu,
EmbedLayerNormalization...), so a report shows whether the fusions fired.
com.microsoft ops run only on ONNX Runtime: put `fuse` in ONNX Runtime variants only.

A fused model must not grow: ONNX Runtime's constant folding materializes an Expand, Tile or
ConstantOfShape of a constant as onnxsim's does (passes/simplify.py). Where the output is
more than twice the input's size (and 1 MiB more), it is optimized again without
`ConstantFolding`, which the simplify pass before it has done within bounds; the runtime
folds it in memory at load.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
from pydantic import Field

from compiler.core.errors import NotApplicable
from passes.base import (
    Pass,
    PassConfig,
    PassContext,
    PassResult,
    default_opset,
    grew_by_folding,
    op_histogram,
)
from passes.graph_facts import graph_facts
from passes.ort_tools import quiet, run_model

__all__ = ["FUSED_OPS", "FuseConfig", "FusePass"]


# ONNX Runtime's fusions emit LayerNormalization in the default domain, an op of opset 17.
_LAYER_NORM_OPSET = 17
_LAYER_NORM_FUSIONS = ("LayerNormFusionL1", "LayerNormFusionL2", "SimplifiedLayerNormFusion")
# The operators ONNX Runtime's transformer fusions emit: what `fused_ops` counts.
FUSED_OPS = frozenset(
    {
        "Attention",
        "MultiHeadAttention",
        "SkipLayerNormalization",
        "SkipSimplifiedLayerNormalization",
        "SimplifiedLayerNormalization",
        "EmbedLayerNormalization",
        "Gelu",
        "BiasGelu",
        "FastGelu",
        "QuickGelu",
        "BiasAdd",
        "LayerNormalization",
    }
)


class FuseConfig(PassConfig):
    name: Literal["fuse"] = "fuse"
    level: Literal["basic", "extended"] = "basic"
    disabled_optimizers: tuple[str, ...] = ()
    transformer: Literal["auto", "on", "off", "require"] = "auto"
    transformer_model_type: Literal["bert", "vit", "gpt2"] = "bert"
    num_heads: int = Field(default=0, ge=0, description="0: detect from the graph")
    hidden_size: int = Field(default=0, ge=0, description="0: detect from the graph")


def _ort_optimize(
    model: onnx.ModelProto, level: str, disabled: list[str], workdir: Path
) -> onnx.ModelProto:
    """ONNX Runtime's offline optimization at `level`, without constant folding where
    folding grows the model (module docstring)."""
    out = _ort_optimized(model, level, disabled, workdir)
    if grew_by_folding(model, out) and "ConstantFolding" not in disabled:
        return _ort_optimized(model, level, [*disabled, "ConstantFolding"], workdir)
    return out


def _ort_optimized(
    model: onnx.ModelProto, level: str, disabled: list[str], workdir: Path
) -> onnx.ModelProto:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, src)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        }[level]
        opts.optimized_model_filepath = str(dst)
        opts.log_severity_level = 3
        ort.InferenceSession(
            str(src), opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
        )
        return onnx.load(dst)


class FusePass(Pass[FuseConfig]):
    name = "fuse"
    version = "7"  # 3: fused_ops in the record, transformer: require; 4: ONNX Runtime's own
    # default-domain ops (SimplifiedLayerNormalization) pass its check (ONNX's does not know them);
    # 5: attention as the dynamo exporter and tf2onnx write it is found (graph_facts.py); 6: no
    # growth by constant folding (module docstring); 7: transformer fusions that change the
    # outputs on the calibration feeds are dropped (`_changed_outputs`)
    config_cls = FuseConfig
    uses_calibration: ClassVar[bool] = True  # the feeds the fusions are checked on

    def libraries(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnx": onnx.__version__, "onnxruntime": ort.__version__}

    def __call__(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        """`require`: NotApplicable (the variant is skipped with the reason) on a graph
        without attention, before any work, and where the fusions fail."""
        if self.config.transformer != "require":
            return super().__call__(model, ctx)
        if not graph_facts(model).has_attention:
            raise NotApplicable(
                "fuse: a transformer variant, and the graph has no attention pattern "
                "(MatMul -> Softmax -> MatMul); the other ONNX Runtime variants cover it"
            )
        result = super().__call__(model, ctx)
        transformer = result.record.get("transformer")
        if isinstance(transformer, dict) and "skipped" in transformer:
            raise NotApplicable(f"fuse (transformer variant): {transformer['skipped']}")
        return result

    def _run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        cfg = self.config
        disabled = list(cfg.disabled_optimizers)
        facts = graph_facts(model)
        want = cfg.transformer in ("on", "require") or (
            cfg.transformer == "auto" and facts.transformer_like()
        )
        record: dict[str, Any] = {"level": cfg.level, "graph": facts.describe()}
        opset = default_opset(model)
        layer_norm = opset >= _LAYER_NORM_OPSET
        if not layer_norm:
            disabled += [o for o in _LAYER_NORM_FUSIONS if o not in disabled]
            record["layer_norm_fusion"] = (
                f"off: LayerNormalization needs opset >= {_LAYER_NORM_OPSET}, the model has "
                f"{opset}; normalize to opset {_LAYER_NORM_OPSET} to get it"
            )
        if not want:
            record["transformer"] = f"off ({cfg.transformer}: no attention/LayerNorm/GELU)"
            out = _ort_optimize(model, cfg.level, disabled, ctx.workdir)
            return PassResult(model=out, record=record)
        # ONNX Runtime's own recipe: basic first (folding), then the Python fusions.
        out = _ort_optimize(model, "basic", disabled, ctx.workdir)
        fused, record["transformer"] = self._transformer_fusions(out, layer_norm)
        feeds = ctx.calibration()[:_CHECK_FEEDS]
        if fused is not out and (changed := _changed_outputs(out, fused, feeds)):
            record["transformer"] = {
                "skipped": f"transformer fusions changed the outputs ({changed}); kept the graph"
            }
        else:
            out = fused
        if cfg.level == "extended":
            out = _ort_optimize(out, "extended", disabled, ctx.workdir)
        after = op_histogram(out)
        record["fused_ops"] = {op: n for op, n in after.items() if op in FUSED_OPS}
        return PassResult(model=out, record=record)

    def _transformer_fusions(
        self, model: onnx.ModelProto, layer_norm: bool
    ) -> tuple[onnx.ModelProto, Any]:
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model

        cfg = self.config
        options = FusionOptions(cfg.transformer_model_type)
        options.enable_layer_norm = options.enable_skip_layer_norm = layer_norm
        options.enable_bias_skip_layer_norm = options.enable_embed_layer_norm = layer_norm
        candidate = onnx.ModelProto()
        candidate.CopyFrom(model)
        try:
            with quiet("", "onnxruntime.transformers"):
                optimizer = optimize_model(
                    candidate,
                    model_type=cfg.transformer_model_type,
                    num_heads=cfg.num_heads,
                    hidden_size=cfg.hidden_size,
                    optimization_options=options,
                    opt_level=0,
                    use_gpu=False,
                )
                fused = {k: v for k, v in optimizer.get_fused_operator_statistics().items() if v}
        except Exception as exc:  # the fusion scripts assert on shapes they do not expect
            reason = " ".join(str(exc).split())[:300]
            return model, {
                "skipped": f"transformer fusions failed, kept the graph: "
                f"{type(exc).__name__}: {reason}"
            }
        if _interface(optimizer.model) != _interface(model):
            # e.g. EmbedLayerNormalization wants int32 ids: never change the caller's contract
            return model, {
                "skipped": "transformer fusions changed the model interface; kept the graph"
            }
        return optimizer.model, {"model_type": cfg.transformer_model_type, "fused": fused}


_CHECK_FEEDS = 2  # feeds the fused graph is run on beside the graph before
_CHANGED = 1e-4  # relative L2 error of an output that the fusions changed, not reordered


def _changed_outputs(
    before: onnx.ModelProto, after: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]
) -> str:
    """Which outputs the transformer fusions changed, on `feeds`: beyond float reordering
    (relative L2 error over `_CHANGED`), or in shape; '' where none did. The fusions match
    patterns by op type: a ConvNeXt LayerNorm over channels (ReduceMean on axis 1 of NCHW)
    became a SimplifiedLayerNormalization over axis 1 and on, which normalizes channels,
    height and width together (relative L2 error 0.018 on its logits)."""
    if not feeds:
        return ""
    changed = []
    for want, got in zip(run_model(before, feeds), run_model(after, feeds), strict=True):
        for name, w in want.items():
            g = got.get(name)
            if g is None or g.shape != w.shape:
                changed.append(f"'{name}': shape {None if g is None else g.shape} for {w.shape}")
                continue
            if w.dtype.kind != "f":
                if not np.array_equal(g, w):
                    changed.append(f"'{name}': other values")
                continue
            w64, g64 = w.astype(np.float64), g.astype(np.float64)
            scale = float(np.linalg.norm(w64[np.isfinite(w64)])) or 1.0
            both = np.isfinite(w64) & np.isfinite(g64)
            if not np.array_equal(np.isfinite(w64), np.isfinite(g64)):
                changed.append(f"'{name}': other non-finite values")
            elif (err := float(np.linalg.norm(w64[both] - g64[both])) / scale) > _CHANGED:
                changed.append(f"'{name}': relative L2 error {err:.2g}")
    return "; ".join(dict.fromkeys(changed))


def _interface(model: onnx.ModelProto) -> list[tuple[str, int, int]]:
    inits = {t.name for t in model.graph.initializer}
    return [
        (vi.name, vi.type.tensor_type.elem_type, len(vi.type.tensor_type.shape.dim))
        for vi in [*model.graph.input, *model.graph.output]
        if vi.name not in inits
    ]
