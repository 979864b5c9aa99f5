"""The transformer path on a tiny BERT exported from torch: ONNX Runtime's fusions fire
(Attention, SkipLayerNormalization, Gelu) and are counted in the record; dynamic int8 of the
fused graph (QAttention, MatMulInteger) passes the int8 gate; a `require` fuse skips graphs
without attention before any work; NNCF reads the graph as a transformer (SmoothQuant)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.core.errors import NotApplicable
from compiler.core.tolerance import DEFAULT_TOLERANCES
from passes.base import op_histogram
from passes.fuse import FuseConfig, FusePass
from passes.nncf import NncfConfig, NncfPass
from passes.quantize import QuantizeConfig, QuantizePass
from tests.passes.builders import context, parity, small_cnn

torch = pytest.importorskip("torch")
nn = torch.nn

SEQ, VOCAB, HIDDEN, HEADS, LAYERS = 16, 64, 32, 4, 2
FP32_ATOL = 1e-4


class _Layer(nn.Module):  # type: ignore[misc]
    """A BERT encoder layer written as BERT exporters write it: Q/K/V Linear, scaled
    scores plus mask bias, softmax, output Linear, residual LayerNorms, exact GELU."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(HIDDEN, HIDDEN) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(HIDDEN), nn.LayerNorm(HIDDEN)
        self.up, self.down = nn.Linear(HIDDEN, 4 * HIDDEN), nn.Linear(4 * HIDDEN, HIDDEN)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], HEADS, HIDDEN // HEADS).transpose(1, 2)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(HIDDEN // HEADS) + bias
        ctx = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(x.shape)
        x = self.ln1(x + self.o(ctx))
        return self.ln2(x + self.down(nn.functional.gelu(self.up(x))))


class _TinyBert(nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(VOCAB, HIDDEN), nn.Embedding(SEQ, HIDDEN)
        self.ln = nn.LayerNorm(HIDDEN)
        self.layers = nn.ModuleList(_Layer() for _ in range(LAYERS))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1]).unsqueeze(0)
        x = self.ln(self.tok(input_ids) + self.pos(pos))
        bias = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        for layer in self.layers:
            x = layer(x, bias)
        return x


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bert") / "tiny_bert.onnx"
    ids = torch.ones(1, SEQ, dtype=torch.int64)
    with torch.no_grad():
        torch.onnx.export(
            _TinyBert().eval(),
            (ids, torch.ones_like(ids)),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["hidden"],
            opset_version=17,
            dynamo=False,
        )
    return onnx.load(str(path))


def _tokens(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        mask = np.ones((1, SEQ), np.int64)
        mask[0, rng.integers(SEQ // 2, SEQ) :] = 0
        feeds.append({"input_ids": rng.integers(0, VOCAB, (1, SEQ)), "attention_mask": mask})
    return feeds


def test_transformer_fusions_fire_and_are_counted(
    tmp_path: Path, tiny_bert: onnx.ModelProto
) -> None:
    result = FusePass(FuseConfig(transformer="require"))(tiny_bert, context(tiny_bert, tmp_path))
    fused = result.record["fused_ops"]
    assert fused["Attention"] == LAYERS
    assert fused["SkipLayerNormalization"] == 2 * LAYERS
    assert fused.get("Gelu", 0) + fused.get("BiasGelu", 0) + fused.get("FastGelu", 0) == LAYERS
    assert fused == {k: v for k, v in op_histogram(result.model).items() if k in fused}
    assert "Softmax" not in op_histogram(result.model)
    feeds = _tokens(4, seed=1)
    assert parity(tiny_bert, result.model, feeds)["hidden"].max_abs_err <= FP32_ATOL


def test_require_skips_a_graph_without_attention(tmp_path: Path) -> None:
    model = small_cnn()
    with pytest.raises(NotApplicable, match="no attention pattern"):
        FusePass(FuseConfig(transformer="require"))(model, context(model, tmp_path))


def test_fused_graph_takes_gated_dynamic_int8(tmp_path: Path, tiny_bert: onnx.ModelProto) -> None:
    """ort-int8-tf's passes: the fused Attention becomes QAttention, the MatMuls
    MatMulInteger, and the result passes the int8 gate on held-out tokens."""
    ctx = context(tiny_bert, tmp_path, _tokens(8, seed=1))
    fused = FusePass(FuseConfig(transformer="require"))(tiny_bert, ctx).model
    cfg = QuantizeConfig(mode="dynamic", accuracy_aware={"enabled": True})
    result = QuantizePass(cfg)(fused, context(fused, tmp_path, _tokens(8, seed=1)))
    ops = op_histogram(result.model)
    assert ops.get("QAttention", 0) == LAYERS and ops.get("MatMulInteger", 0) >= 2 * LAYERS
    loop = result.record["accuracy_aware"]
    assert loop.get("gate_after", loop["gate_before"])["passed"]
    held_out = parity(tiny_bert, result.model, _tokens(8, seed=2))["hidden"]
    assert held_out.cosine >= DEFAULT_TOLERANCES["int8"].min_cosine


def test_nncf_quantizes_it_as_a_transformer(tmp_path: Path, tiny_bert: onnx.ModelProto) -> None:
    pytest.importorskip("nncf")
    ctx = context(tiny_bert, tmp_path, _tokens(8, seed=1), source="generated")
    result = NncfPass(NncfConfig(smooth_quant_alpha=0.5))(tiny_bert, ctx)
    assert result.record["model_type"] == "transformer"
    assert result.record["smooth_quant"] == 0.5
    assert result.record["quantized_ops"]["QuantizeLinear"] > 0
