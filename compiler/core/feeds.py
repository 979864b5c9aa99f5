"""The feeds format: one feed is `{input name: array}`; many feeds travel as one .npz whose keys
are `<5-digit index>.<input name>`. Written byte-identically for identical arrays.

Standard library and numpy only: the emulated aarch64 worker and the GPU verification script
read and write this format too.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.errors import ConfigError

__all__ = [
    "Feeds",
    "feeds_digest",
    "pack_feeds",
    "read_feeds_npz",
    "read_json",
    "read_labels",
    "read_npz",
    "unpack_feeds",
    "write_feeds_npz",
    "write_npz",
]

Feeds = dict[str, np.ndarray]


def read_json(path: Path) -> Any | None:
    """A JSON file's content, None where there is no such file; ConfigError naming the file
    where it cannot be read."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable JSON file ({exc})") from exc


def read_labels(path: Path) -> list[Any] | None:
    """The samples' labels in a labels.json (a list, one per sample, as a package's
    reference/ and the data node's output hold them), or None where there is no such file or
    it holds no list."""
    labels = read_json(path)
    return labels if isinstance(labels, list) else None


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{path}: not a readable .npz file ({exc})") from exc


def write_npz(path: Path, arrays: Mapping[str, np.ndarray], compress: bool = False) -> None:
    """Like np.savez, but byte-identical for identical arrays (fixed zip timestamps);
    `compress`: deflated at a fixed level, as np.savez_compressed (sample inputs: images
    padded to a size, tokens padded to a length, compress 30-90x; model outputs hardly)."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            arr = io.BytesIO()
            np.lib.format.write_array(arr, np.asarray(arrays[name], order="C"), allow_pickle=False)
            info.compress_type = method  # a ZipInfo's own, not the archive's default
            zf.writestr(info, arr.getvalue(), compresslevel=6 if compress else None)
    path.write_bytes(buf.getvalue())


def pack_feeds(feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {
        f"{i:05d}.{name}": np.asarray(a) for i, feed in enumerate(feeds) for name, a in feed.items()
    }


def unpack_feeds(arrays: Mapping[str, np.ndarray]) -> list[Feeds]:
    feeds: dict[int, Feeds] = {}
    for key, arr in arrays.items():
        idx, _, name = key.partition(".")
        feeds.setdefault(int(idx), {})[name] = arr
    return [feeds[i] for i in sorted(feeds)]


def read_feeds_npz(path: Path) -> list[Feeds]:
    return unpack_feeds(read_npz(path))


def write_feeds_npz(path: Path, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
    write_npz(path, pack_feeds(feeds))


def feeds_digest(feeds: Sequence[Mapping[str, np.ndarray]]) -> str:
    h = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            a = np.asarray(feed[name], order="C")
            h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()
