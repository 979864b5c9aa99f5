"""compile-pkg: one trained model in, one deployment package for heterogeneous hardware out.

`import compiler` must stay cheap: heavy backends (torch, openvino, tvm, tensorrt) are
imported lazily by the modules that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(package_path, **kwargs):  # type: ignore[no-untyped-def]
    """Load a package for serving; see :func:`compiler.loader.load`."""
    from compiler.loader import load as _load

    return _load(package_path, **kwargs)
