"""ONNX Runtime backend (targets/onnxruntime/backend.py)."""
