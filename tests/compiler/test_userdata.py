"""The user's calibration and parity data: folders of .npz with labels.json, data loaders,
and the split that keeps calibration and parity feeds apart."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from compiler.core.errors import ConfigError, ContractError
from compiler.core.feeds import read_feeds_npz, write_npz
from compiler.core.records import DataOutput
from compiler.pipeline.interface import extract_contract
from compiler.pipeline.userdata import load_user_data, read_source, run_loader, split_evenly
from tests.compiler.helpers import build
from tests.models import tiny_mlp

MLP = extract_contract(tiny_mlp())  # x [batch, 8] float32


def _feeds(n: int, start: int = 0) -> list[dict[str, np.ndarray]]:
    return [{"x": np.full((1, 8), start + i, np.float32)} for i in range(n)]


def _folder(path: Path, n: int, labels: list | None = None, start: int = 0) -> Path:
    path.mkdir(parents=True)
    for i, feed in enumerate(_feeds(n, start)):
        write_npz(path / f"{i:04d}.npz", feed)
    if labels is not None:
        doc = {f"{i:04d}.npz": label for i, label in enumerate(labels)}
        (path / "labels.json").write_text(json.dumps(doc))
    return path


def _ids(feeds: list[dict[str, np.ndarray]]) -> list[int]:
    return [int(f["x"][0, 0]) for f in feeds]


# --------------------------------------------------------------------------- the user's data


def test_split_evenly_splits_each_label_alike() -> None:
    labels = [0, 90, 180, 270] * 8  # pages cycling through four rotations
    cal, val = split_evenly(32, 0.5, labels)
    assert sorted(cal + val) == list(range(32)) and not set(cal) & set(val)
    assert sorted(labels[i] for i in val) == sorted([0, 90, 180, 270] * 4)
    assert split_evenly(32, 0.5, labels) == (cal, val)  # deterministic
    assert split_evenly(1, 0.5) == ([], [0])  # one feed: kept for parity
    assert split_evenly(2, 0.9) == ([0], [1])  # one always left to calibrate
    assert split_evenly(10, 0.3) == ([0, 1, 2, 4, 5, 7, 8], [3, 6, 9])


def test_labels_come_from_labels_json_beside_the_feeds(tmp_path: Path) -> None:
    src = read_source(_folder(tmp_path / "d", 3, ["a", "b", "c"]), MLP)
    assert _ids(src.feeds) == [0, 1, 2] and src.labels == ["a", "b", "c"]
    assert read_source(tmp_path / "d" / "0001.npz", MLP).labels == ["b"]  # one file of a folder
    assert read_source(_folder(tmp_path / "n", 2), MLP).labels is None
    (tmp_path / "d" / "labels.json").write_text(json.dumps({"0000.npz": "a"}))
    with pytest.raises(ConfigError, match=r"labels.json: no label for 0001.npz"):
        read_source(tmp_path / "d", MLP)


def test_a_stacked_file_takes_a_list_of_labels(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir()
    write_npz(d / "all.npz", {"x": np.zeros((3, 1, 8), np.float32)})
    (d / "labels.json").write_text(json.dumps({"all.npz": [1, 2, 3]}))
    assert read_source(d, MLP).labels == [1, 2, 3]
    (d / "labels.json").write_text(json.dumps({"all.npz": 1}))
    with pytest.raises(ConfigError, match="all.npz stacks 3 feeds; give a list of 3 labels"):
        read_source(d, MLP)


def test_one_folder_is_split_into_disjoint_calibration_and_samples(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "d", 6, ["a", "b", "a", "b", "a", "b"])
    for given in (
        {"samples": folder, "calibration": None},
        {"samples": None, "calibration": folder},
    ):
        user = load_user_data(MLP, **given, loader=None, validation_fraction=0.5)
        assert user.samples is not None and user.calibration is not None
        assert user.split_from == 6
        assert not set(_ids(user.samples.feeds)) & set(_ids(user.calibration))
        assert len(user.samples.feeds) == 3 and len(user.calibration) == 3
        assert set(user.samples.labels or []) == {"a", "b"}  # each label on both sides
    twice = load_user_data(
        MLP, samples=folder, calibration=folder, loader=None, validation_fraction=0.5
    )
    assert twice.split_from == 6  # the same folder for both: split, never shared


def test_samples_the_calibration_holds_are_dropped(tmp_path: Path) -> None:
    cal = _folder(tmp_path / "cal", 4)
    samples = _folder(tmp_path / "samples", 4, ["w", "x", "y", "z"], start=2)  # 2, 3 overlap
    user = load_user_data(
        MLP, samples=samples, calibration=cal, loader=None, validation_fraction=0.5
    )
    assert user.samples is not None and _ids(user.samples.feeds) == [4, 5]
    assert user.samples.labels == ["y", "z"] and user.overlap_removed == 2
    with pytest.raises(ConfigError, match="every sample feed is also in the calibration data"):
        load_user_data(
            MLP,
            samples=cal,
            calibration=_folder(tmp_path / "c2", 4),
            loader=None,
            validation_fraction=0.5,
        )


LOADER = """
import numpy as np

def feeds():
    return [{"x": np.full((1, 8), i, np.float32)} for i in range(4)]

def labelled():
    return feeds(), np.array([7, 8, 7, 8])

def stacked():
    return {"x": np.zeros((5, 1, 8), np.float32)}

def generator():
    return (f for f in feeds())

def wrong_label_count():
    return feeds(), [1]

def wrong_shape():
    return [{"x": np.zeros((1, 9), np.float32)}]

def broken():
    raise RuntimeError("no such bucket")

not_a_function = 3
"""


@pytest.fixture
def loader_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_loader.py").write_text(LOADER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_loader", raising=False)
    return "my_loader"


def test_data_loader_forms(loader_module: str, tmp_path: Path) -> None:
    assert _ids(run_loader(f"{loader_module}:feeds", MLP).feeds) == [0, 1, 2, 3]
    labelled = run_loader(f"{loader_module}:labelled", MLP)
    assert labelled.labels == [7, 8, 7, 8] and all(type(v) is int for v in labelled.labels)
    assert len(run_loader(f"{loader_module}:stacked", MLP).feeds) == 5
    assert len(run_loader(f"{loader_module}:generator", MLP).feeds) == 4
    by_file = run_loader(f"{tmp_path / 'my_loader.py'}:feeds", MLP)
    assert len(by_file.feeds) == 4
    user = load_user_data(
        MLP,
        samples=None,
        calibration=None,
        loader=f"{loader_module}:labelled",
        validation_fraction=0.5,
    )
    assert user.split_from == 4 and user.samples is not None and user.samples.labels == [7, 8]


@pytest.mark.parametrize(
    ("attr", "error", "message"),
    [
        ("wrong_label_count", ConfigError, "1 labels for 4 feeds"),
        ("wrong_shape", ContractError, "axis 1: size 9, contract fixes it at 8"),
        ("broken", ConfigError, "raised RuntimeError: no such bucket"),
        ("not_a_function", ConfigError, "not_a_function is not a function"),
        ("missing", ConfigError, "cannot import"),
    ],
)
def test_data_loader_errors_name_the_loader(
    loader_module: str, attr: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as err:
        run_loader(f"{loader_module}:{attr}", MLP)
    assert f"{loader_module}:{attr}" in str(err.value)


def test_a_loader_and_data_folders_are_not_mixed(loader_module: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use one or the other"):
        load_user_data(
            MLP,
            samples=_folder(tmp_path / "d", 2),
            calibration=None,
            loader=f"{loader_module}:feeds",
            validation_fraction=0.5,
        )


# --------------------------------------------------------------------------- through a build


def test_a_build_splits_one_folder_and_keeps_its_labels(tmp_path: Path, mlp_path: Path) -> None:
    folder = _folder(tmp_path / "d", 6, ["a", "b", "c", "d", "e", "f"])
    out = build(mlp_path, tmp_path / "pkg", tmp_path / "cache", ("cpu",), sample_data=folder)
    data = out.results["data"]
    assert data.out is not None
    record = data.expect(DataOutput)
    assert (record.samples, record.calibration, record.split_from) == (3, 3, 6)
    assert (record.samples_source, record.calibration_source, record.labels) == (
        "user",
        "user",
        True,
    )
    labels = json.loads((data.out / "labels.json").read_text())
    samples = read_feeds_npz(data.out / "samples.npz")
    calibration = read_feeds_npz(data.out / "calibration.npz")
    assert labels == [["a", "b", "c", "d", "e", "f"][i] for i in _ids(samples)]
    assert not set(_ids(samples)) & set(_ids(calibration))
    assert out.manifest.measurements["cpu/ort-fp32"].parity[0].status == "passed"


def test_a_build_with_a_data_loader_keys_on_what_it_returns(
    loader_module: str, tmp_path: Path, mlp_path: Path
) -> None:
    raw = {"data": {"loader": f"{loader_module}:labelled"}}
    first = build(mlp_path, tmp_path / "a", tmp_path / "cache", ("cpu",), raw=raw)
    record = first.results["data"].expect(DataOutput)
    assert (record.split_from, record.samples, record.labels) == (4, 2, True)
    again = build(mlp_path, tmp_path / "b", tmp_path / "cache", ("cpu",), raw=raw)
    assert again.results["data"].status == "cached"
    (tmp_path / "my_loader.py").write_text(LOADER.replace("range(4)", "range(6)"))
    sys.modules.pop(loader_module, None)
    raw = {"data": {"loader": f"{tmp_path / 'my_loader.py'}:labelled"}}
    with pytest.raises(ConfigError, match="4 labels for 6 feeds"):
        build(mlp_path, tmp_path / "c", tmp_path / "cache", ("cpu",), raw=raw)
