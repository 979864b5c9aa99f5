"""simplify: onnxsim constant folding, shape inference and graph cleanup, checked numerically.

onnxsim's own check (`check_n` runs on random inputs, compared with numpy.allclose) is on:
its default of 0 checks nothing. A model onnxsim cannot handle (too big, external data, an
op it cannot fold, a failed check) is passed through unchanged with the reason recorded, so
one odd model never fails a build at this optional step.

A simplified model must not run slower. onnxsim's optimizers fold constants into weights,
and a fold across the edge of a pattern the runtimes fuse breaks the fusion:
`fuse_preceding_mul_into_conv` folds GELU's closing `* 0.5` into the next Conv's weights, so
ONNX Runtime fused none of PP-OCRv6's 10 (rec) and 13 (det) Erf GELUs, and the simplified
recognizer ran 1.13-1.20x the reference's time on ONNX Runtime and 1.18x on OpenVINO
(2026-12-02, AMD EPYC 2 vCPUs; every artifact built on it inherited that). Elsewhere the same
fold saves an elementwise op, so every result is checked instead: ONNX Runtime's own
hardware-independent optimizer (`extended`) runs on the input and on the output, and where
the output ends with fewer of the fused kernels that replace elementwise chains
(`RUNTIME_FUSIONS`), the model is simplified again without the folds known to break them
(`FUSION_BREAKERS`), then with constant folding and shape inference only, and passed through
unchanged where every try loses them.

A simplified model must not grow either. Constant folding materializes what an Expand, Tile
or ConstantOfShape of a constant computes (onnxsim's own CLI warns of it): a 16 KiB model
adding a constant broadcast to [1, 64, 256, 256] came out at 16 MiB, and every artifact and
the package with it. Where the output is more than twice the input's size (and 1 MiB more),
it is simplified again with no folded constant larger than the largest the model already
had (onnxsim's `tensor_size_threshold`): weights still fold (a BatchNorm into its Conv, a
transposed weight), broadcasts are left to the runtimes.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
import onnx
from pydantic import Field

from compiler.core.errors import ConfigError
from passes.base import Pass, PassConfig, PassContext, PassResult, grew_by_folding

__all__ = [
    "FUSION_BREAKERS",
    "RUNTIME_FUSIONS",
    "SimplifyConfig",
    "SimplifyPass",
    "import_onnxsim",
    "runtime_fusions",
]

# protobuf cannot serialize a message of 2 GiB or more; leave headroom for the graph.
_PROTO_LIMIT = 2**31 - 64 * 2**20


def import_onnxsim() -> ModuleType:
    """onnxsim, imported without torch and sympy where they are not loaded yet.

    onnxsim 0.8's `__init__` imports torch for an optional bridge to PPQ (ppq_integration.py,
    which catches the ImportError), nothing the simplifier uses: 1.5-3 s of every cold build's
    simplify node, in a fresh worker (measured 2026-12-01, py-spy: 3.0 s of a 11.7 s build of
    ppocr_cls). Its model_info.py imports sympy, also optional (caught), for symbolic FLOP
    counts the simplifier never prints: 0.52 s of the 0.76 s the import took with torch kept out
    (2026-12-05, cProfile of magika's build); 0.11 s without either. Both are hidden only
    while onnxsim imports: a later `import sympy` (ONNX Runtime's symbolic shape inference)
    loads it as usual. Where onnxsim then fails to import, it is imported again with both."""
    hidden = [m for m in ("torch", "sympy") if m not in sys.modules]
    if "onnxsim" in sys.modules or not hidden:
        import onnxsim

        return onnxsim
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError
    try:
        import onnxsim

        return onnxsim
    except ImportError:
        for name in [m for m in sys.modules if m == "onnxsim" or m.startswith("onnxsim.")]:
            del sys.modules[name]
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    import onnxsim

    return onnxsim


# onnxsim optimizers that fold constants across the edge of a pattern the runtimes fuse
# (see the module's docstring): left out in the first retry when a result loses a fusion
FUSION_BREAKERS = ("fuse_preceding_mul_into_conv",)

# ONNX Runtime's kernels that replace a chain of elementwise ops, made by its `extended`
# optimizer on any host: a simplified graph on which it makes fewer of them runs slower.
RUNTIME_FUSIONS = frozenset(
    {
        "Gelu",
        "FastGelu",
        "BiasGelu",
        "QuickGelu",
        "LayerNormalization",
        "SimplifiedLayerNormalization",
        "SkipLayerNormalization",
        "SkipSimplifiedLayerNormalization",
        "BiasSoftmax",
        "Attention",
        "MultiHeadAttention",
        "FusedConv",
        "FusedGemm",
    }
)


class SimplifyConfig(PassConfig):
    name: Literal["simplify"] = "simplify"
    check_n: int = Field(default=3, ge=1, description="random-input checks after simplifying")
    check_rtol: float = Field(default=1e-4, gt=0)
    check_atol: float = Field(default=1e-5, gt=0)
    constant_folding: bool = True
    shape_inference: bool = True
    fuse_bn: bool = True
    skipped_optimizers: tuple[str, ...] = ()
    keep_runtime_fusions: bool = Field(
        default=True,
        description="simplify again with fewer optimizers where the result loses ONNX "
        "Runtime fusions",
    )


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


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _largest_constant(model: onnx.ModelProto) -> int:
    """Bytes of the model's largest initializer or Constant value."""
    tensors = [*model.graph.initializer]
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute]
    return max((t.ByteSize() for t in tensors), default=0)


class SimplifyPass(Pass[SimplifyConfig]):
    name = "simplify"
    version = "3"  # 2: the runtime-fusion check; 3: no growth by folding (module docstring)
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
        return self._simplify(model, shapes, ctx.workdir)

    def _simplify(
        self, model: onnx.ModelProto, shapes: dict[str, list[int]], workdir: Path
    ) -> PassResult:
        cfg = self.config
        record: dict[str, Any] = {"check_n": cfg.check_n, "check_shapes": shapes}
        out, failure = self._onnxsim(model, shapes, cfg.skipped_optimizers)
        if failure:
            return PassResult(model=model, record=record, skipped=failure)
        size, grown, threshold = model.ByteSize(), out.ByteSize(), 0
        if grew_by_folding(model, out):
            threshold = max(_largest_constant(model), 1024)
            out, failure = self._onnxsim(model, shapes, cfg.skipped_optimizers, threshold)
            if failure:
                return PassResult(model=model, record=record, skipped=failure)
            record["folding_limited"] = (
                f"folding made the model {_size(grown)} from {_size(size)}: simplified again "
                f"with no folded constant over {_size(threshold)} (the largest the model "
                f"had): {_size(out.ByteSize())}"
            )
        record["check_passed"] = True
        if not cfg.keep_runtime_fusions:
            return PassResult(model=out, record=record)
        before = runtime_fusions(model, workdir)
        if before is None:
            record["runtime_fusions"] = "not checked: ONNX Runtime cannot load the model"
            return PassResult(model=out, record=record)
        lost = _fusion_loss(before, out, workdir)
        record["runtime_fusions"] = dict(sorted(before.items()))
        if not lost:
            return PassResult(model=out, record=record)
        why = f"onnxsim's optimizers cost ONNX Runtime's fusions ({lost})"
        fewer = tuple(dict.fromkeys([*cfg.skipped_optimizers, *FUSION_BREAKERS]))
        retries = (
            (fewer, f"without {', '.join(FUSION_BREAKERS)}"),
            (None, "with constant folding and shape inference only"),
        )
        tried = [why]
        for skipped, how in retries:
            again, failure = self._onnxsim(model, shapes, skipped, threshold)
            still = failure or _fusion_loss(before, again, workdir)
            if not still:
                record["fusions_kept"] = f"{why}: simplified again {how}"
                return PassResult(model=again, record=record)
            tried.append(f"{how}: {still}")
        del record["runtime_fusions"]
        return PassResult(model=model, record=record, skipped="; ".join(tried) + "; kept the input")

    def _onnxsim(
        self,
        model: onnx.ModelProto,
        shapes: dict[str, list[int]],
        skipped: tuple[str, ...] | None,
        threshold: int = 0,
    ) -> tuple[onnx.ModelProto, str]:
        """onnxsim's model with the `skipped` optimizers left out (None: every optimizer,
        folding and shape inference only), no folded constant over `threshold` bytes (0:
        onnxsim's default), and "", or the input and why it could not be used."""
        onnxsim = import_onnxsim()
        cfg = self.config
        limit = {"tensor_size_threshold": f"{threshold}B"} if threshold else {}
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                out, ok = onnxsim.simplify(
                    model,
                    check_n=cfg.check_n,
                    check_rtol=cfg.check_rtol,
                    check_atol=cfg.check_atol,
                    test_input_shapes=shapes,
                    perform_optimization=skipped is not None,
                    skip_fuse_bn=not cfg.fuse_bn,
                    skip_constant_folding=not cfg.constant_folding,
                    skip_shape_inference=not cfg.shape_inference,
                    skipped_optimizers=list(skipped or ()) or None,
                    **limit,
                )
        except Exception as exc:  # onnxsim raises RuntimeError/ValueError/its own types
            reason = " ".join(str(exc).split())[:400]
            return model, f"onnxsim failed: {type(exc).__name__}: {reason}"
        if not ok:
            tail = " ".join(log.getvalue().split())[-400:]
            return model, f"onnxsim's numeric check failed, kept the input model: {tail}"
        return out, ""


def runtime_fusions(model: onnx.ModelProto, workdir: Path) -> Counter[str] | None:
    """How many of each RUNTIME_FUSIONS kernel ONNX Runtime's `extended` optimizer (the
    hardware-independent levels) makes of `model`; None where it cannot load the model."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "optimized.onnx"
        onnx.save(model, src)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(dst)
        opts.log_severity_level = 3
        try:
            ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - a model ONNX Runtime refuses is judged elsewhere
            return None
        graph = onnx.load(dst, load_external_data=False).graph
        return Counter(n.op_type for n in graph.node if n.op_type in RUNTIME_FUSIONS)


def _fusion_loss(before: Counter[str], model: onnx.ModelProto, workdir: Path) -> str:
    """The RUNTIME_FUSIONS kernels ONNX Runtime makes fewer of in `model` than `before`
    ("Gelu 10 -> 0"), or "" where it makes as many."""
    after = runtime_fusions(model, workdir)
    if after is None:
        return "ONNX Runtime cannot load the simplified model"
    return ", ".join(
        f"{op} {n} -> {after[op]}" for op, n in sorted(before.items()) if after[op] < n
    )
