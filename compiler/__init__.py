"""compile-pkg: one trained model in, one deployment package for heterogeneous hardware out.

`import compiler` stays cheap: heavy backends (torch, openvino, tvm, tensorrt) are imported
lazily by the modules that need them. Serving code loads a package with
`compiler.serving.loader.load`.
"""

from __future__ import annotations

from compiler.core.telemetry import ort_telemetry_off

ort_telemetry_off()  # before any module of ours imports onnxruntime (core/telemetry.py)

__version__ = "0.1.0"

__all__ = ["__version__"]
