from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.compiler.helpers import build
from tests.models import save, tiny_mlp

# two cpu variants (so a fallback has somewhere to go) and an arm artifact; ONNX Runtime only
VARIANTS = {
    "targets": {
        "cpu": {
            "variants": {
                "fast": {"compile": {"backend": "onnxruntime"}},
                "basic": {
                    "compile": {"backend": "onnxruntime", "graph_optimization_level": "basic"}
                },
            }
        }
    }
}


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small package for the serving tests (built once; tests get copies)."""
    root = tmp_path_factory.mktemp("built")
    model = save(tiny_mlp(), root / "mlp.onnx")
    build(model, root / "pkg", None, targets=("cpu", "arm"), raw=VARIANTS)
    return root / "pkg"


@pytest.fixture
def pkg(built: Path, tmp_path: Path) -> Path:
    """A private copy of the serving tests' package."""
    return Path(shutil.copytree(built, tmp_path / "pkg"))
