from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.core.errors import InputModelError
from compiler.pipeline.normalize import (
    load_onnx,
    normalize_model,
    parse_input_spec,
    source_digest,
)
from tests.models import tiny_mlp


def test_external_data_is_read_and_enters_the_digest(tmp_path: Path) -> None:
    model = tiny_mlp()
    path = tmp_path / "ext.onnx"
    onnx.save_model(
        model,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.data",
        size_threshold=0,
    )
    loaded = load_onnx(path)
    w1 = onnx.numpy_helper.to_array(next(i for i in loaded.graph.initializer if i.name == "w1"))
    assert w1.shape == (8, 16)
    before = source_digest(path)
    data = tmp_path / "ext.data"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert source_digest(path) != before
    data.unlink()
    with pytest.raises(InputModelError, match="external data file ext.data is missing"):
        source_digest(path)


def test_old_opset_is_upgraded(tmp_path: Path) -> None:
    model, record = normalize_model(tiny_mlp(opset=11), "old.onnx", min_opset=13)
    assert record == {"opset_source": 11, "opset_upgraded_to": 13, "named_dims": {}}
    assert next(o.version for o in model.opset_import if o.domain == "") == 13


def test_bad_files_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputModelError, match="no such file"):
        load_onnx(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not protobuf" * 10)
    with pytest.raises(InputModelError, match="junk.onnx: not a valid ONNX model"):
        load_onnx(junk)


def test_checker_failure_names_the_model() -> None:
    bad = tiny_mlp()
    bad.graph.node[0].input[1] = "does_not_exist"
    with pytest.raises(InputModelError, match="bad.onnx: fails onnx.checker"):
        normalize_model(bad, "bad.onnx")


def test_input_spec_parsing() -> None:
    s = parse_input_spec("x:float32:[batch,3,224,224]")
    assert (s.name, s.dtype, s.shape) == ("x", "float32", ("batch", 3, 224, 224))
    with pytest.raises(InputModelError, match="expected NAME:DTYPE"):
        parse_input_spec("x:[1,2]")


def test_torch_module_is_exported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch", reason="torch is the optional [torch] extra")
    pytest.importorskip("onnxscript", reason="torch.onnx.export needs onnxscript")
    mod = tmp_path / "my_models.py"
    mod.write_text(
        "import torch\n"
        "def small():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from compiler.pipeline.config import resolve_config
    from compiler.serving.loader import load
    from tests.compiler.helpers import build_source

    out = build_source(
        "my_models:small",
        ["x:float32:[batch,8]"],
        tmp_path / "pkg",
        resolve_config({"latency": {"runs": 3}}, ["cpu"]),
    )
    c = out.manifest.contract
    assert [(t.name, t.shape) for t in c.inputs] == [("x", ["batch", 8])]
    x = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    import my_models  # type: ignore[import-not-found]

    expected = my_models.small()(torch.from_numpy(x)).detach().numpy()
    with load(tmp_path / "pkg") as s:
        got = s.run({"x": x})
    np.testing.assert_allclose(next(iter(got.values())), expected, atol=1e-5)
    assert out.manifest.source.kind == "torch"
