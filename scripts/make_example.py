"""Build the bundled example model, examples/tiny_cnn.onnx: a small image classifier
(Conv-BN-ReLU x3, global pooling, Gemm, Softmax) over [batch, 3, 32, 32] with 10 classes.

Weights are random with a fixed seed (this is a pipeline example, not a trained model), so
the file is byte-identical whenever it is rebuilt. Run: python scripts/make_example.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"


def build(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    x, cin = "input", 3
    for i, cout in enumerate((16, 32, 64)):
        w = rng.normal(0, np.sqrt(2 / (cin * 9)), (cout, cin, 3, 3))
        nodes.append(
            helper.make_node(
                "Conv",
                [x, init(f"conv{i}.w", w), init(f"conv{i}.b", np.zeros(cout))],
                [f"c{i}"],
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
                strides=[2, 2] if i else [1, 1],
                name=f"conv{i}",
            )
        )
        nodes.append(
            helper.make_node(
                "BatchNormalization",
                [
                    f"c{i}",
                    init(f"bn{i}.scale", rng.uniform(0.5, 1.5, cout)),
                    init(f"bn{i}.bias", rng.normal(0, 0.1, cout)),
                    init(f"bn{i}.mean", rng.normal(0, 0.1, cout)),
                    init(f"bn{i}.var", rng.uniform(0.5, 1.5, cout)),
                ],
                [f"b{i}"],
                name=f"bn{i}",
            )
        )
        nodes.append(helper.make_node("Relu", [f"b{i}"], [f"r{i}"], name=f"relu{i}"))
        x, cin = f"r{i}", cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1, name="flatten"))
    nodes.append(
        helper.make_node(
            "Gemm",
            ["flat", init("fc.w", rng.normal(0, 0.2, (10, cin))), init("fc.b", np.zeros(10))],
            ["logits"],
            transB=1,
            name="fc",
        )
    )
    nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"))
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="compile-pkg-example"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(build().SerializeToString(deterministic=True))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
