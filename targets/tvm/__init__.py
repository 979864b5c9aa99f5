"""Apache TVM backend: build side in backend.py (docs/tvm.md), loading and running in runtime.py.

Importing this package imports nothing else, so `targets.tvm.runtime` stays bare (the emulated
aarch64 worker and scripts/gpu_verify.py import it without pydantic or onnx).
"""
