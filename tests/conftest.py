from __future__ import annotations

from pathlib import Path

import pytest

from tests.models import save, tiny_cnn, tiny_mlp


@pytest.fixture
def mlp_path(tmp_path: Path) -> Path:
    return save(tiny_mlp(), tmp_path / "mlp.onnx")


@pytest.fixture
def cnn_path(tmp_path: Path) -> Path:
    return save(tiny_cnn(), tmp_path / "cnn.onnx")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's ~/.cache from tests; no MPLCONFIGDIR, and none left behind:
    an in-process `main()` sets it (compiler/cli/app.py charts_home) and the CLI processes
    later tests start would take it for the user's."""
    monkeypatch.setenv("COMPILE_PKG_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.setenv("MPLCONFIGDIR", "")  # remembers the value to restore after the test
    monkeypatch.delenv("MPLCONFIGDIR")
