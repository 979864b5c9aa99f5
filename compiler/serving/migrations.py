"""Reading a manifest document safely, and migrating older schema versions to the current one.

`validate_document` turns bytes into a JSON object with bounded nesting and no duplicate keys;
`migrate` runs one migration function per version. A document of the wrong shape for its
version (a string where a list belongs, `schema_version: "1"`) is a `PackageError` naming the
problem, never a `KeyError` from the middle of a migration.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from compiler.core.errors import PackageError

__all__ = ["MAX_DEPTH", "MIGRATIONS", "migrate", "validate_document"]

CURRENT = 2
MAX_DEPTH = 64  # deepest real manifests nest about 12 levels
MAX_VALUES = 2_000_000


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _check_shape(doc: Any, where: str) -> None:
    """Nesting at most MAX_DEPTH deep and at most MAX_VALUES values (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if depth > MAX_DEPTH or seen > MAX_VALUES:
            raise PackageError(
                f"{where}: nested deeper than {MAX_DEPTH} levels or over {MAX_VALUES} values; "
                "not a compile-pkg manifest"
            )
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def validate_document(text: str | bytes, where: str) -> dict[str, Any]:
    """The manifest's JSON object; PackageError for anything that is not one."""
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise PackageError(f"{where}: nested too deeply; not a compile-pkg manifest") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise PackageError(f"{where}: unreadable manifest ({exc})") from None
    if not isinstance(doc, dict):
        raise PackageError(f"{where}: a manifest is a JSON object, got {type(doc).__name__}")
    _check_shape(doc, where)
    return doc


# --------------------------------------------------------------------------- migrations


def _from_v0(doc: dict[str, Any]) -> dict[str, Any]:
    """v0 (pre-release) had no schema_version and kept measurements inside each artifact."""
    measurements = {}
    for a in doc.get("artifacts", []):
        rec = {k: a.pop(k) for k in ("parity", "latency") if k in a}
        if rec:
            measurements[a["id"]] = {k: [v] for k, v in rec.items() if v}
    doc.setdefault("measurements", {}).update(measurements)
    doc["schema_version"] = 1
    return doc


def _from_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2: runtime settings name their backend; the cache key leaves the artifacts; the
    policies and the configured dims are read from the recorded config."""
    for a in doc.get("artifacts", []):
        a.pop("cache_key", None)
        runtime = a.get("runtime") or None
        if runtime is not None:
            runtime["backend"] = a["backend"]
            if a["backend"] == "openvino":
                runtime.pop("int8_method", None)
        a["runtime"] = runtime
    cfg = doc.get("provenance", {}).get("config", {})
    parity = cfg.get("parity", {})
    doc["policy"] = {
        "parity": {k: parity[k] for k in ("tolerances", "outputs") if k in parity},
        "latency": cfg.get("latency", {}),
        "selection": cfg.get("selection", {}),
    }
    doc["configured_dims"] = sorted(cfg.get("dims", {}))
    build = doc.get("build", {})
    build["pass_log"] = {n: _pass_record_v1(r) for n, r in build.get("pass_log", {}).items()}
    doc["schema_version"] = 2
    return doc


_PASS_RECORD_FIELDS = ("version", "nodes_before", "nodes_after", "bytes_before", "bytes_after")


def _pass_record_v1(rec: dict[str, Any]) -> dict[str, Any]:
    """v1 pass records were flat (common fields, timing and the pass's own facts together)."""
    common = {k: rec.pop(k) for k in (*_PASS_RECORD_FIELDS, "ops_before", "ops_after") if k in rec}
    rec.pop("seconds", None)
    return {
        "name": rec.pop("pass", ""),
        **common,
        "skipped": rec.pop("skipped", ""),
        "warnings": rec.pop("warnings", []),
        "details": rec,
    }


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _from_v0, 1: _from_v1}


def _version(doc: dict[str, Any]) -> int:
    if "schema_version" not in doc:
        return 0  # v0 documents had no schema_version
    version = doc["schema_version"]
    if type(version) is not int or version < 1:
        raise PackageError(
            f"manifest schema_version {version!r} is not a version number (1, 2, ...)"
        )
    if version > CURRENT:
        raise PackageError(
            f"manifest schema_version {version} is newer than this compile-pkg reads "
            f"({CURRENT}); upgrade compile-pkg"
        )
    return version


def migrate(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` (changed in place) as a current-version document."""
    version = _version(doc)
    while version < CURRENT:
        try:
            doc = MIGRATIONS[version](doc)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise PackageError(
                f"manifest of schema_version {version} has an unexpected shape "
                f"({type(exc).__name__}: {exc}); it cannot be migrated"
            ) from None
        version = doc["schema_version"]
    return doc
