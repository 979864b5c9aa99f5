"""Backends, one per folder: how to compile an artifact (`backend.py`, build side) and one small
runtime module that loads and runs it (`runtime.py`: standard library, numpy and that runtime).
The build-side registry is targets/registry.py, the runtime modules' index
targets/runtime_index.py, and targets/runner.py the contract-checking runner every caller uses.
"""

from compiler.core.telemetry import ort_telemetry_off

ort_telemetry_off()  # before this package's modules import onnxruntime (core/telemetry.py)
