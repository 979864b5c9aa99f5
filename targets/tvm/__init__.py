"""Apache TVM backend (see targets/tvm/backend.py and docs/tvm.md)."""

from __future__ import annotations

from targets.tvm.backend import TvmBackend, TvmOptions, TvmRunner

__all__ = ["TvmBackend", "TvmOptions", "TvmRunner"]
