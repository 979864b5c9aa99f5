"""TensorRT for the gpu target (written against the TensorRT 10.x Python API; docs/tensorrt.md).

Build side: backend.py (prebuilt engine or deferred build spec), options.py, preflight.py,
engine.py (the builder), spec.py, cache.py, compat.py. Serving: runtime.py loads an engine,
choosing it with resolve.py (prebuilt, cached here, or built from the deferred spec).

Importing this package imports nothing else, so `targets.tensorrt.runtime` stays light.
"""
