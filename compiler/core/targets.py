"""The three deployment targets and the CPU architecture each one means: one table, checked once."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from compiler.core.errors import ConfigError

__all__ = ["TARGET_ARCH", "TargetName", "check_targets"]

TargetName = Literal["cpu", "arm", "gpu"]

TARGET_ARCH: dict[str, str] = {"cpu": "x86_64", "arm": "aarch64", "gpu": "x86_64"}


def check_targets(names: Iterable[str], where: str = "--targets") -> tuple[str, ...]:
    """The names in order, without duplicates; ConfigError naming the unknown ones."""
    picked = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    unknown = [n for n in picked if n not in TARGET_ARCH]
    if unknown or not picked:
        raise ConfigError(
            f"{where}: unknown target(s) {unknown or picked}; choose from {sorted(TARGET_ARCH)}"
        )
    return picked
