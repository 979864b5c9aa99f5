"""The pass registry: one explicit entry per pass, and the config union the config file uses.

Add a pass by writing `passes/<name>.py` (a `Pass` subclass and its `PassConfig`) and
listing both here. `tests/passes/test_registry.py` checks every entry imports and runs.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from passes.base import Pass, PassConfig, PassContext, PassResult
from passes.fuse import FuseConfig, FusePass

__all__ = ["PASSES", "AnyPassConfig", "Pass", "PassConfig", "PassContext", "PassResult", "make_pass"]

PASSES: dict[str, type[Pass]] = {
    FusePass.name: FusePass,
}

# A discriminated union on `name`; with a single member pydantic still validates `name`.
AnyPassConfig = Annotated[FuseConfig, Field(discriminator="name")]


def make_pass(config: PassConfig) -> Pass:
    return PASSES[config.name](config)
