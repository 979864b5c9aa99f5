"""The user's sample and calibration data: .npz files or folders, or a data loader, with
their labels; split so calibration and parity never share a feed.

A .npz with arrays keyed by input name is one feed; if every array has one more axis than
the contract says, that leading axis stacks several feeds. A folder holds .npz files, read in
name order. Labels: a `labels.json` beside the .npz files mapping file name -> label (a list
of labels for a file of stacked feeds), as scripts/make_data.py writes, or the loader's.

A data loader is `module:function` (or `path/to/file.py:function`), called with no
arguments; it returns a list of feeds (or one mapping of stacked arrays), or a pair
`(feeds, labels)` with one JSON-able label per feed.

When only one source is given (one folder, or the loader), it is split deterministically:
`validation_fraction` of the feeds, evenly spread in file order within each label (so each
class is split alike), are the parity samples; the rest calibrate. A single feed is kept for
parity; calibration is then generated. When both folders are given, sample feeds that
calibration holds too are dropped.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.contract import Contract
from compiler.core.errors import ConfigError, ContractError, short_message
from compiler.core.feeds import Feeds, feeds_digest, read_json, read_npz
from compiler.core.task import load_callable

__all__ = [
    "Labelled",
    "UserData",
    "data_shapes",
    "load_user_data",
    "most_common",
    "observed_sizes",
    "read_source",
    "run_loader",
    "split_evenly",
]

LABELS_FILE = "labels.json"
Label = Any  # a JSON value


@dataclass(frozen=True)
class Labelled:
    """Feeds from one source, with one label per feed when the source has labels."""

    feeds: list[Feeds]
    labels: list[Label] | None

    def take(self, idx: Sequence[int]) -> Labelled:
        labels = [self.labels[i] for i in idx] if self.labels is not None else None
        return Labelled([self.feeds[i] for i in idx], labels)

    def digest(self) -> str:
        h = hashlib.sha256(feeds_digest(self.feeds).encode())
        h.update(json.dumps(self.labels, sort_keys=True).encode())
        return h.hexdigest()


@dataclass(frozen=True)
class UserData:
    """What the user gave, ready for the data node: None where that set must be generated."""

    samples: Labelled | None
    calibration: list[Feeds] | None
    split_from: int = 0
    overlap_removed: int = 0


def _unstack(arrays: dict[str, np.ndarray], contract: Contract, where: str) -> list[Feeds]:
    ranks = {t.name: len(t.shape) for t in contract.inputs}
    missing = sorted(set(ranks) - set(arrays))
    if missing:
        raise ContractError(f"{where}: missing inputs {missing} (has {sorted(arrays)})")
    stacked = [np.ndim(arrays[n]) == ranks[n] + 1 for n in ranks]
    if all(stacked):
        count = {np.shape(arrays[n])[0] for n in ranks}
        if len(count) != 1:
            raise ContractError(
                f"{where}: stacked inputs disagree on the sample count {sorted(count)}"
            )
        return [{n: np.asarray(arrays[n][i]) for n in ranks} for i in range(count.pop())]
    if any(stacked):
        raise ContractError(f"{where}: some inputs are stacked (rank+1) and some are not")
    return [{n: np.asarray(arrays[n]) for n in ranks}]


def _checked(feeds: list[Feeds], contract: Contract, where: str) -> list[Feeds]:
    out = []
    for i, feed in enumerate(feeds):
        try:
            out.append(contract.validate_feeds(feed))
        except ContractError as exc:
            at = where if len(feeds) == 1 else f"{where} feed {i}"
            raise ContractError(f"{at}: {exc}") from None
    return out


def _json_label(value: Any, where: str) -> Label:
    if isinstance(value, np.generic | np.ndarray):
        value = value.tolist()
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: label {value!r} is not a JSON value") from None
    return value


def _labels_map(folder: Path) -> dict[str, Label] | None:
    path = folder / LABELS_FILE
    doc = read_json(path)
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected an object mapping .npz file name -> label")
    return doc


def read_source(path: Path, contract: Contract) -> Labelled:
    """The feeds of a .npz file or a folder of them, with labels when labels.json has them."""
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise ConfigError(f"{path}: folder holds no .npz files")
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"{path}: no such file or folder")
    mapping = _labels_map(files[0].parent)
    feeds: list[Feeds] = []
    labels: list[Label] = []
    for f in files:
        mine = _checked(_unstack(read_npz(f), contract, str(f)), contract, str(f))
        feeds += mine
        if mapping is None:
            continue
        where = f"{f.parent / LABELS_FILE}"
        if f.name not in mapping:
            raise ConfigError(f"{where}: no label for {f.name}; give one for every .npz file")
        label = mapping[f.name]
        if len(mine) == 1:
            labels.append(label)
        elif isinstance(label, list) and len(label) == len(mine):
            labels += label
        else:
            raise ConfigError(
                f"{where}: {f.name} stacks {len(mine)} feeds; give a list of {len(mine)} labels"
            )
    return Labelled(feeds, labels if mapping is not None else None)


def _import(spec: str) -> Callable[[], Any]:
    module, sep, attr = spec.rpartition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"data loader {spec!r}: expected module:function or file.py:function")
    try:
        return load_callable(spec)
    except ValueError as exc:
        raise ConfigError(f"data loader {exc}") from exc


def run_loader(spec: str, contract: Contract) -> Labelled:
    """Call a data loader and check what it returns against the contract."""
    where = f"data loader {spec}"
    fn = _import(spec)
    try:
        result = fn()
    except Exception as exc:
        raise ConfigError(f"{where} raised {short_message(exc)}") from exc
    raw_labels = None
    if isinstance(result, tuple) and len(result) == 2:
        result, raw_labels = result
    if isinstance(result, Mapping):
        feeds = _unstack({str(k): np.asarray(v) for k, v in result.items()}, contract, where)
    elif isinstance(result, Iterable) and not isinstance(result, str | bytes):
        feeds = []
        for i, f in enumerate(result):
            if not isinstance(f, Mapping):
                raise ConfigError(
                    f"{where}: item {i} is {type(f).__name__}, not a feed {{input name: array}}"
                )
            feeds.append({str(k): np.asarray(v) for k, v in f.items()})
        if not feeds:
            raise ConfigError(f"{where}: returned no feeds (a list of {{input name: array}})")
    else:
        raise ConfigError(
            f"{where}: returned {type(result).__name__}; expected a list of feeds, a mapping of "
            "stacked arrays, or (feeds, labels)"
        )
    feeds = _checked(feeds, contract, where)
    labels = None
    if raw_labels is not None:
        labels = [_json_label(v, where) for v in raw_labels]
        if len(labels) != len(feeds):
            raise ConfigError(f"{where}: {len(labels)} labels for {len(feeds)} feeds")
    return Labelled(feeds, labels)


def split_evenly(
    n: int, fraction: float, labels: Sequence[Label] | None = None
) -> tuple[list[int], list[int]]:
    """(calibration, validation) indices: `fraction` of `n` (at least one, and one left to
    calibrate) for validation, evenly spread in index order within each label."""
    if n < 2:
        return [], list(range(n))
    keep = min(n - 1, max(1, round(n * fraction)))
    groups: dict[str, list[int]] = {}
    for i in range(n):
        key = json.dumps(labels[i], sort_keys=True) if labels is not None else ""
        groups.setdefault(key, []).append(i)
    order = [i for members in groups.values() for i in members]
    picked = {order[k] for k in range(n) if (k + 1) * keep // n > k * keep // n}
    return sorted(set(range(n)) - picked), sorted(picked)


def _split(source: Labelled, fraction: float) -> UserData:
    cal, val = split_evenly(len(source.feeds), fraction, source.labels)
    calibration = source.take(cal).feeds if cal else None
    return UserData(source.take(val), calibration, split_from=len(source.feeds))


def load_user_data(
    contract: Contract,
    *,
    samples: Path | None,
    calibration: Path | None,
    loader: str | None,
    validation_fraction: float,
    loaded: Labelled | None = None,
) -> UserData:
    """The user's data for this build (`loaded`: the loader's result, when already run)."""
    if loader is not None:
        if samples is not None or calibration is not None:
            raise ConfigError(
                f"data.loader {loader} and --sample-data/--calibration-data both given; "
                "use one or the other"
            )
        return _split(loaded or run_loader(loader, contract), validation_fraction)
    if (
        samples is not None
        and calibration is not None
        and samples.resolve() != calibration.resolve()
    ):
        cal = read_source(calibration, contract).feeds
        held = {feeds_digest([f]) for f in cal}
        source = read_source(samples, contract)
        kept = [i for i, f in enumerate(source.feeds) if feeds_digest([f]) not in held]
        if not kept:
            raise ConfigError(
                f"{samples}: every sample feed is also in the calibration data {calibration}; "
                "give parity samples the calibration does not hold"
            )
        return UserData(source.take(kept), cal, overlap_removed=len(source.feeds) - len(kept))
    one = samples or calibration
    if one is None:
        return UserData(None, None)
    return _split(read_source(one, contract), validation_fraction)


# ------------------------------------------------------------------ the sizes the data has


def data_shapes(paths: Iterable[Path]) -> dict[str, dict[str, list[int]]]:
    """Every array's shape in the user's .npz files (file name -> array name -> shape), read
    from the arrays' headers only: what the normalize node ranges dims by, and keys on.
    Files it cannot read are left out (the data node names them when it reads them)."""
    shapes: dict[str, dict[str, list[int]]] = {}
    for path in paths:
        files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
        for f in files:
            try:
                shapes[str(f)] = _npz_shapes(f)
            except (OSError, ValueError, zipfile.BadZipFile):
                continue
    return shapes


def _npz_shapes(path: Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if not name.endswith(".npy"):
                continue
            with z.open(name) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, _ = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, _ = np.lib.format.read_array_header_2_0(f)
            out[name.removesuffix(".npy")] = [int(d) for d in shape]
    return out


def observed_sizes(
    shapes: Mapping[str, Mapping[str, Sequence[int]]], contract: Contract
) -> dict[str, list[int]]:
    """Symbolic input dim -> its size in each of the user's feeds (a file of stacked feeds
    counts each), one entry a feed: the lists line up, the i-th sizes of every dim being one
    feed's. A dim two inputs carry at different sizes in a feed takes the first input's (the
    data node refuses that feed). Files that do not hold every input at its rank, or at its
    rank + 1, say nothing (the data node reports them)."""
    ranks = {t.name: len(t.shape) for t in contract.inputs}
    sizes: dict[str, list[int]] = {}
    for arrays in shapes.values():
        if not set(ranks) <= set(arrays):
            continue
        lead = {len(arrays[n]) - ranks[n] for n in ranks}
        if lead not in ({0}, {1}):
            continue
        count = arrays[next(iter(ranks))][0] if lead == {1} else 1
        feed: dict[str, int] = {}
        for t in contract.inputs:
            shape = arrays[t.name][1:] if lead == {1} else arrays[t.name]
            for dim, size in zip(t.shape, shape, strict=True):
                if isinstance(dim, str):
                    feed.setdefault(dim, int(size))
        for dim, size in feed.items():
            sizes.setdefault(dim, []).extend([size] * count)
    return sizes


def most_common(sizes: Sequence[int]) -> tuple[int, int]:
    """(the size most feeds have, how many have it); the smaller size where counts tie."""
    counted = Counter(sizes)
    size = min(counted, key=lambda v: (-counted[v], v))
    return size, counted[size]
