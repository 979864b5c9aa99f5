"""What a caller of `load()` asks for: a target, backend or precision, artifact ids that are
required or tried first. Checked against the package before anything loads (an id the package
does not have is an error with the nearest ids, never silently ignored), and turned into the
reason a forced pick reports.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from compiler.core.errors import ConfigError, NoCompatibleArtifact
from compiler.serving.manifest import ArtifactEntry, Manifest
from compiler.serving.selection import REFERENCE, has_reference_model

__all__ = ["Request"]


def _unknown_id(kind: str, given: str, ids: list[str]) -> ConfigError:
    guess = difflib.get_close_matches(given.replace(".", "/", 1), ids, n=1, cutoff=0.5)
    hint = f"; did you mean '{guess[0]}'?" if guess else ""
    return ConfigError(
        f"{kind}: the package has no artifact '{given}'{hint} (ids are <target>/<variant>: "
        f"{', '.join(ids) or 'none'})"
    )


@dataclass(frozen=True)
class Request:
    """The caller's steer. `require`: only these ids, in this order; `order`: these first."""

    target: str | None = None
    backend: str | None = None
    precision: str | None = None
    require: tuple[str, ...] | None = None
    order: tuple[str, ...] | None = None

    def check(self, m: Manifest) -> None:
        """ConfigError for an id the package lacks; NoCompatibleArtifact for a target,
        backend or precision none of its artifacts has."""
        ids = [a.id for a in m.artifacts] + ([REFERENCE] if has_reference_model(m) else [])
        if self.require is not None and not self.require:
            raise ConfigError("require=[]: name at least one artifact id, or leave it out")
        for kind, given in (("require", self.require), ("order", self.order)):
            for aid in given or ():
                if aid not in ids:
                    raise _unknown_id(kind, aid, ids)
        for field in ("target", "backend", "precision"):
            want = getattr(self, field)
            have = sorted({getattr(a, field) for a in m.artifacts})
            if want is not None and want not in have:
                raise NoCompatibleArtifact(
                    f"{field}={want!r}: no artifact of the package has it; it has {have}"
                )

    @property
    def filters(self) -> str:
        return ", ".join(
            f"{f}={getattr(self, f)}"
            for f in ("target", "backend", "precision")
            if getattr(self, f) is not None
        )

    def describe(self) -> str:
        parts = [self.filters] if self.filters else []
        if self.require is not None:
            parts.append(f"require={list(self.require)}")
        if self.order is not None:
            parts.append(f"order={list(self.order)}")
        return ", ".join(parts) or "no request (the package's policy)"

    def preferred(self) -> list[str] | None:
        """The ids ranking puts first: the required ones, else the caller's order."""
        given = self.require if self.require is not None else self.order
        return list(given) if given is not None else None

    def mismatch(self, a: ArtifactEntry) -> str:
        """Why `a` is not what the caller asked for ('' when it is)."""
        if self.require is not None and a.id not in self.require:
            return f"not requested (require={list(self.require)})"
        for field in ("target", "backend", "precision"):
            want, have = getattr(self, field), getattr(a, field)
            if want is not None and want != have:
                return f"not requested ({field}={want!r}; this one is {have!r})"
        return ""

    def reference_mismatch(self) -> str:
        """Why the package's reference model is not what the caller asked for ('' when it
        is): it belongs to no target, and it is fp32 on ONNX Runtime."""
        if self.require is not None and REFERENCE not in self.require:
            return f"not requested (require={list(self.require)})"
        if self.target is not None:
            return f"not requested (target={self.target!r}; the reference belongs to no target)"
        for field, have in (("backend", "onnxruntime"), ("precision", "fp32")):
            want = getattr(self, field)
            if want is not None and want != have:
                return f"not requested ({field}={want!r}; the reference is {have!r})"
        return ""

    def why(self, aid: str) -> str:
        """The honest first part of a pick's reason: what the caller's request did."""
        if self.require is not None:
            i = self.require.index(aid)
            return (
                f"required by the caller (require={list(self.require)}, "
                f"choice {i + 1} of {len(self.require)})"
            )
        parts = []
        if self.order is not None:
            if aid in self.order:
                parts.append(
                    f"the caller's order={list(self.order)} puts it at {self.order.index(aid) + 1}"
                )
            else:
                parts.append(f"none of the caller's order={list(self.order)} could be used")
        if self.filters:
            parts.append(f"the caller asked for {self.filters}")
        return "; ".join(parts)
