"""Names in an ONNX graph: a new one that no tensor, node or dim already has."""

from __future__ import annotations

__all__ = ["free_name"]


def free_name(base: str, taken: set[str]) -> str:
    """`base`, or `base_N` where that is taken; added to `taken`."""
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name
