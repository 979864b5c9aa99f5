"""Where the real models and the fonts for their data live.

Three models sit in the shared folder beside the checkout (`../shared/models`); the others are
extracted from pinned PyPI wheels by `scripts/fetch_models.py` into a cache outside the repo
(`$COMPILE_PKG_MODELS`, default `~/.cache/compile-pkg/models`). Nothing here downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FONT_DIR", "MODELS_DIR", "REPO", "models_cache"]

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO.parent / "shared" / "models"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")


def models_cache() -> Path:
    """The folder `scripts/fetch_models.py` fills (it need not exist yet)."""
    env = os.environ.get("COMPILE_PKG_MODELS")
    return Path(env) if env else Path.home() / ".cache" / "compile-pkg" / "models"
