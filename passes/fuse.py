"""fuse: ONNX Runtime's offline graph optimization, at levels that stay portable.

`basic` (constant folding, redundant node removal, Conv+BN/Add/Mul fusions) and `extended`
(GELU, LayerNorm, attention-style fusions into com.microsoft ops) are hardware-independent.
`all` (layout optimizations, NCHWc) bakes the build host's CPU into the graph and is refused
here: a model another backend or host will read must not carry it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import onnx

from passes.base import Pass, PassConfig, PassContext, PassResult

__all__ = ["FuseConfig", "FusePass"]


class FuseConfig(PassConfig):
    name: Literal["fuse"] = "fuse"
    level: Literal["basic", "extended"] = "basic"
    disabled_optimizers: tuple[str, ...] = ()


class FusePass(Pass[FuseConfig]):
    name = "fuse"
    version = "1"
    config_cls = FuseConfig

    def libraries(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnx": onnx.__version__, "onnxruntime": ort.__version__}

    def _run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        import onnxruntime as ort

        level = {
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        }[self.config.level]
        with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
            src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
            onnx.save(model, src)
            opts = ort.SessionOptions()
            opts.graph_optimization_level = level
            opts.optimized_model_filepath = str(dst)
            opts.log_severity_level = 3
            ort.InferenceSession(
                str(src), opts, providers=["CPUExecutionProvider"],
                disabled_optimizers=list(self.config.disabled_optimizers),
            )
            out = onnx.load(dst)
        return PassResult(model=out, record={"level": self.config.level})
