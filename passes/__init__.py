"""Graph passes (ONNX in, ONNX out), one per module; the registry is passes/registry.py."""

from compiler.core.telemetry import ort_telemetry_off

ort_telemetry_off()  # before this package's modules import onnxruntime (core/telemetry.py)
