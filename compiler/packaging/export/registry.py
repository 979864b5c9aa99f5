"""Pushing an OCI layout written by `export_oci` to a registry and pulling it back, with the
ORAS Python SDK (`pip install oras`; imported only here, when asked for).

Each per-target manifest is pushed with its config and layer blobs and tagged with its ref
(`<version>-<target>`); a pull fetches the tags asked for into a new layout, which
`read_layout` then checks blob by blob and turns into a package that verifies.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any

from compiler.core.errors import BackendUnavailable, PackageError
from compiler.packaging.export.oci import OCI_INDEX, REF_NAME
from compiler.packaging.write import write_atomically

__all__ = ["pull_layout", "push_layout"]

_OK = (200, 201, 202)


def _client(insecure: bool) -> Any:
    try:
        provider = importlib.import_module("oras.provider")
    except ImportError:
        raise BackendUnavailable(
            "oras", "the ORAS Python SDK is not installed", "pip install oras"
        ) from None
    return provider.Registry(insecure=insecure)


def _check(response: Any, what: str) -> None:
    if response.status_code not in _OK:
        raise PackageError(
            f"{what}: the registry answered {response.status_code} {response.text[:200]!r}"
        )


def push_layout(layout: Path, repository: str, *, insecure: bool = False) -> list[str]:
    """Push every manifest of `layout` to `repository` (`host[:port]/name`); the refs pushed."""
    client = _client(insecure)
    index = json.loads((layout / "index.json").read_text(encoding="utf-8"))
    blobs = layout / "blobs" / "sha256"
    pushed = []
    for desc in index["manifests"]:
        ref = f"{repository}:{desc['annotations'][REF_NAME]}"
        container = client.get_container(ref)
        manifest = json.loads((blobs / desc["digest"].removeprefix("sha256:")).read_bytes())
        for d in [manifest["config"], *manifest["layers"]]:
            path = blobs / d["digest"].removeprefix("sha256:")
            _check(client.upload_blob(str(path), container, d), f"{ref}: blob {d['digest']}")
        _check(client.upload_manifest(manifest, container), f"{ref}: manifest")
        pushed.append(ref)
    return pushed


def pull_layout(repository: str, tags: list[str], out: Path, *, insecure: bool = False) -> Path:
    """Fetch `tags` of `repository` into a new OCI layout at `out` (blobs checked later by
    `read_layout`)."""
    client = _client(insecure)

    def fill(root: Path) -> None:
        blobs = root / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}\n', encoding="utf-8")
        index = []
        for tag in tags:
            container = client.get_container(f"{repository}:{tag}")
            manifest = client.get_manifest(container)
            for d in [manifest["config"], *manifest["layers"]]:
                target = blobs / d["digest"].removeprefix("sha256:")
                if not target.exists():
                    client.download_blob(container, d["digest"], str(target))
            data = json.dumps(manifest, indent=2, sort_keys=True).encode()
            digest = hashlib.sha256(data).hexdigest()
            (blobs / digest).write_bytes(data)
            index.append(
                {
                    "mediaType": manifest.get("mediaType", ""),
                    "digest": f"sha256:{digest}",
                    "size": len(data),
                    "annotations": {REF_NAME: tag},
                }
            )
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index}
        (root / "index.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")

    write_atomically(out, fill)
    return out
