"""Sample data: read the user's (.npz file or folder), or generate it from the contract.

A .npz with arrays keyed by input name is one feed; if every array has one more axis than
the contract says, that leading axis stacks several feeds. A folder holds .npz files, read
in name order. Generated data uses a fixed seed, the dims' `opt` sizes and per-input value
ranges from the config, so it is the same on every run and host.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from compiler.core.contract import Contract
from compiler.core.errors import ConfigError, ContractError
from compiler.core.feeds import read_npz

__all__ = ["DataConfig", "InputDomain", "generate_feeds", "read_feeds"]


class InputDomain(BaseModel):
    """The values one input takes, for generated sample data (the `inputs:` section)."""

    model_config = ConfigDict(extra="forbid")
    low: float = 0.0
    high: float = 1.0


class DataConfig(BaseModel):
    """Where calibration and parity samples come from (the `data:` section)."""

    model_config = ConfigDict(extra="forbid")


def _split(
    arrays: dict[str, np.ndarray], contract: Contract, where: str
) -> list[dict[str, np.ndarray]]:
    ranks = {t.name: len(t.shape) for t in contract.inputs}
    missing = sorted(set(ranks) - set(arrays))
    if missing:
        raise ContractError(f"{where}: missing inputs {missing} (has {sorted(arrays)})")
    stacked = [arrays[n].ndim == ranks[n] + 1 for n in ranks]
    if all(stacked):
        count = {arrays[n].shape[0] for n in ranks}
        if len(count) != 1:
            raise ContractError(
                f"{where}: stacked inputs disagree on the sample count {sorted(count)}"
            )
        return [{n: arrays[n][i] for n in ranks} for i in range(count.pop())]
    if any(stacked):
        raise ContractError(f"{where}: some inputs are stacked (rank+1) and some are not")
    return [{n: arrays[n] for n in ranks}]


def read_feeds(path: Path, contract: Contract) -> list[dict[str, np.ndarray]]:
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise ConfigError(f"{path}: folder holds no .npz files")
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"{path}: no such file or folder")
    feeds: list[dict[str, np.ndarray]] = []
    for f in files:
        for feed in _split(read_npz(f), contract, str(f)):
            feeds.append(contract.validate_feeds(feed))
    return feeds


def generate_feeds(
    contract: Contract, count: int, seed: int, ranges: dict[str, tuple[float, float]]
) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    shapes = contract.input_shapes("opt")
    feeds = []
    for _ in range(count):
        feed = {}
        for t in contract.inputs:
            dtype = np.dtype(t.dtype) if t.dtype != "bfloat16" else np.dtype("float32")
            low, high = ranges.get(t.name, (0.0, 1.0) if dtype.kind == "f" else (0.0, 10.0))
            shape = shapes[t.name]
            if dtype.kind == "f":
                arr = rng.uniform(low, high, size=shape).astype(dtype)
            elif dtype.kind == "b":
                arr = rng.integers(0, 2, size=shape).astype(bool)
            else:
                arr = rng.integers(int(low), max(int(high), int(low) + 1), size=shape).astype(dtype)
            feed[t.name] = arr
        feeds.append(feed)
    return feeds
