"""The pass registry: one explicit entry per pass, and the config union the config file uses.

Add a pass by writing `passes/<name>.py` (a `Pass` subclass and its `PassConfig`) and
listing both here. `tests/passes/test_registry.py` checks every entry imports and runs.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from passes.base import Pass, PassConfig, PassContext, PassResult
from passes.fp16 import Fp16Config, Fp16Pass
from passes.fuse import FuseConfig, FusePass
from passes.nncf import NncfConfig, NncfPass
from passes.quantize import QuantizeConfig, QuantizePass
from passes.simplify import SimplifyConfig, SimplifyPass

__all__ = [
    "PASSES",
    "AnyPassConfig",
    "Pass",
    "PassConfig",
    "PassContext",
    "PassResult",
    "make_pass",
]

PASSES: dict[str, type[Pass]] = {
    SimplifyPass.name: SimplifyPass,
    FusePass.name: FusePass,
    QuantizePass.name: QuantizePass,
    Fp16Pass.name: Fp16Pass,
    NncfPass.name: NncfPass,
}

# A discriminated union on `name`: a config file's `name: quantize` picks QuantizeConfig.
AnyPassConfig = Annotated[
    SimplifyConfig | FuseConfig | QuantizeConfig | Fp16Config | NncfConfig,
    Field(discriminator="name"),
]


def make_pass(config: PassConfig) -> Pass:
    return PASSES[config.name](config)
