"""The .npz files feeds are kept in (compiler/core/feeds.py): byte-identical for identical
arrays, stored or deflated."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from compiler.core.feeds import read_feeds_npz, write_feeds_npz, write_npz


def test_deflated_npz_is_byte_identical_smaller_for_padding_and_reads_back(tmp_path: Path) -> None:
    """A package's sample inputs are deflated: a page image padded to its size (layout_cdla's
    16 pages: 89 MiB stored, 1 MiB deflated); two builds must still write the same bytes."""
    page = np.zeros((1, 3, 256, 256), np.float32)
    page[:, :, :40, :60] = np.random.default_rng(0).normal(size=(1, 3, 40, 60))
    feeds = [{"image": page, "scale": np.array([0.5], np.float32)}] * 3
    for compress in (False, True):
        a, b = tmp_path / f"a{compress}.npz", tmp_path / f"b{compress}.npz"
        write_npz(a, {"00000.image": page, "00000.scale": feeds[0]["scale"]}, compress)
        write_npz(b, {"00000.scale": feeds[0]["scale"], "00000.image": page}, compress)
        assert a.read_bytes() == b.read_bytes()
        with zipfile.ZipFile(a) as z:
            kinds = {i.compress_type for i in z.infolist()}
        assert kinds == {zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED}
    assert (tmp_path / "aTrue.npz").stat().st_size * 20 < (tmp_path / "aFalse.npz").stat().st_size
    write_feeds_npz(tmp_path / "f.npz", feeds)
    write_npz(tmp_path / "g.npz", dict(np.load(tmp_path / "f.npz")), compress=True)
    back = read_feeds_npz(tmp_path / "g.npz")
    assert len(back) == 3 and all(np.array_equal(f["image"], page) for f in back)
