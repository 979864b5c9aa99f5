"""passes/graph_facts.py: the attention rule the fuse, quantize and nncf passes share, on
attention as the exporters write it and on the Softmax heads that are not attention."""

from __future__ import annotations

import numpy as np
import pytest

from passes.graph_facts import graph_facts
from tests.passes.builders import attention_block, parity, small_cnn


@pytest.mark.parametrize("around_softmax", ["", "nan_guard", "reshaped"])
def test_attention_is_found_as_each_exporter_writes_it(around_softmax: str) -> None:
    """torch's dynamo exporter guards the probabilities with Where(IsNaN); tf2onnx reshapes
    the scores around Softmax. Both were missed: dynamo-exported BERT, GPT-2 and ViT got
    static int8, NNCF's CNN preset and no transformer fusions."""
    model = attention_block(around_softmax=around_softmax)
    facts = graph_facts(model)
    assert facts.has_attention and facts.describe()["attention_blocks"] == 1
    assert facts.prefers_dynamic_int8() and facts.transformer_like()
    # the variants compute the same attention
    tokens = np.random.default_rng(0).normal(0, 1, (2, 8, 16)).astype(np.float32)
    assert parity(attention_block(), model, [{"x": tokens}])["y"].max_abs_err <= 1e-5


def test_a_classifier_softmax_is_not_attention() -> None:
    facts = graph_facts(small_cnn())
    assert not facts.has_attention and not facts.prefers_dynamic_int8()
