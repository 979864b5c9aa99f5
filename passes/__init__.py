"""Graph passes (ONNX in, ONNX out), one per module; the registry is passes/registry.py."""
