"""Exports of a verified package into the formats serving stacks read: a Triton model
repository (triton.py), an OCI image layout (oci.py). Every export starts from a package whose
closed file set passed its integrity check (source.py) and copies only bytes it hashed."""

from __future__ import annotations

__all__: list[str] = []
