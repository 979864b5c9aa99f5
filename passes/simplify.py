"""simplify: onnxsim constant folding, shape inference and graph cleanup, checked numerically.

onnxsim's own check (`check_n` runs on random inputs, compared with numpy.allclose) is on:
its default of 0 checks nothing. A model onnxsim cannot handle (too big, external data, an
op it cannot fold, a failed check) is passed through unchanged with the reason recorded, so
one odd model never fails a build at this optional step.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import sys
from types import ModuleType
from typing import Literal

import numpy as np
import onnx
from pydantic import Field

from compiler.core.errors import ConfigError
from passes.base import Pass, PassConfig, PassContext, PassResult

__all__ = ["SimplifyConfig", "SimplifyPass", "import_onnxsim"]

# protobuf cannot serialize a message of 2 GiB or more; leave headroom for the graph.
_PROTO_LIMIT = 2**31 - 64 * 2**20


def import_onnxsim() -> ModuleType:
    """onnxsim, imported without torch where torch is not loaded yet.

    onnxsim 0.8's `__init__` imports torch for an optional bridge to PPQ (ppq_integration.py,
    which catches the ImportError), nothing the simplifier uses: 1.5-3 s of every cold build's
    simplify node, in a fresh worker (measured 2026-12-01, py-spy: 3.0 s of a 11.7 s build of
    ppocr_cls). Where onnxsim then fails to import, it is imported again with torch."""
    if "onnxsim" in sys.modules or "torch" in sys.modules:
        import onnxsim

        return onnxsim
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError
    try:
        import onnxsim

        return onnxsim
    except ImportError:
        for name in [m for m in sys.modules if m == "onnxsim" or m.startswith("onnxsim.")]:
            del sys.modules[name]
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    import onnxsim

    return onnxsim


class SimplifyConfig(PassConfig):
    name: Literal["simplify"] = "simplify"
    check_n: int = Field(default=3, ge=1, description="random-input checks after simplifying")
    check_rtol: float = Field(default=1e-4, gt=0)
    check_atol: float = Field(default=1e-5, gt=0)
    constant_folding: bool = True
    shape_inference: bool = True
    fuse_bn: bool = True
    skipped_optimizers: tuple[str, ...] = ()


def _external_tensors(model: onnx.ModelProto) -> list[str]:
    return [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]


def _test_shapes(model: onnx.ModelProto, ctx: PassContext) -> dict[str, list[int]]:
    """Shapes for onnxsim's random check: the contract's `opt` sizes, else a sample's."""
    try:
        return {k: list(v) for k, v in ctx.contract.input_shapes("opt").items()}
    except ConfigError:
        samples = ctx.calibration()
        if not samples:
            raise
        return {k: list(np.asarray(v).shape) for k, v in samples[0].items()}


class SimplifyPass(Pass[SimplifyConfig]):
    name = "simplify"
    version = "1"
    config_cls = SimplifyConfig

    def libraries(self) -> dict[str, str]:
        import onnxruntime as ort

        return {
            "onnx": onnx.__version__,
            "onnxsim": importlib.metadata.version("onnxsim"),
            "onnxruntime": ort.__version__,
        }

    def _run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        external = _external_tensors(model)
        if external:
            return PassResult(
                model=model,
                skipped=f"{len(external)} tensors hold external data (first: '{external[0]}'); "
                "onnxsim needs the weights in memory",
            )
        size = model.ByteSize()
        if size >= _PROTO_LIMIT:
            return PassResult(
                model=model,
                skipped=f"model is {size / 2**30:.2f} GiB; onnxsim works on models under 2 GiB",
            )
        try:
            shapes = _test_shapes(model, ctx)
        except ConfigError as exc:
            return PassResult(model=model, skipped=f"no input shapes to check with: {exc}")
        return self._simplify(model, shapes)

    def _simplify(self, model: onnx.ModelProto, shapes: dict[str, list[int]]) -> PassResult:
        onnxsim = import_onnxsim()
        cfg = self.config
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                out, ok = onnxsim.simplify(
                    model,
                    check_n=cfg.check_n,
                    check_rtol=cfg.check_rtol,
                    check_atol=cfg.check_atol,
                    test_input_shapes=shapes,
                    skip_fuse_bn=not cfg.fuse_bn,
                    skip_constant_folding=not cfg.constant_folding,
                    skip_shape_inference=not cfg.shape_inference,
                    skipped_optimizers=list(cfg.skipped_optimizers) or None,
                )
        except Exception as exc:  # onnxsim raises RuntimeError/ValueError/its own types
            reason = " ".join(str(exc).split())[:400]
            return PassResult(
                model=model, skipped=f"onnxsim failed: {type(exc).__name__}: {reason}"
            )
        record = {"check_n": cfg.check_n, "check_shapes": shapes}
        if not ok:
            tail = " ".join(log.getvalue().split())[-400:]
            return PassResult(
                model=model,
                record=record,
                skipped=f"onnxsim's numeric check failed, kept the input model: {tail}",
            )
        record["check_passed"] = True
        return PassResult(model=out, record=record)
