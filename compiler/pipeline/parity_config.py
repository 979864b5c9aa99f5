"""The `parity:` section of the build config: tolerances per precision and per output, and how
many samples to generate when the user gives none. `policy()` is what the package records."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from compiler.core.contract import OutputKind
from compiler.core.tolerance import DEFAULT_TOLERANCES, ParityPolicy, Precision, Tolerance

__all__ = ["ParityConfig"]


class ParityConfig(BaseModel):
    """The `parity:` block: tolerances (filled with the defaults) and per-output overrides, plus
    how many samples to generate when the user gives none."""

    model_config = ConfigDict(extra="forbid")

    tolerances: dict[Precision, Tolerance] = Field(
        default_factory=lambda: dict(DEFAULT_TOLERANCES)  # type: ignore[arg-type]
    )
    outputs: dict[str, dict[Precision, Tolerance]] = Field(
        default_factory=dict, description="per-output overrides, by output name then precision"
    )
    kinds: dict[str, OutputKind] = Field(
        default_factory=dict, description="what an output means, where the graph does not say"
    )
    samples: int = Field(default=8, ge=1, le=10_000, description="generated samples when no data")
    seed: int = 0

    @field_validator("tolerances", mode="after")
    @classmethod
    def _fill(cls, v: dict[str, Tolerance]) -> dict[str, Tolerance]:
        return {**DEFAULT_TOLERANCES, **v}

    def policy(self) -> ParityPolicy:
        tolerances: dict[str, Tolerance] = {str(k): v for k, v in self.tolerances.items()}
        outputs = {o: {str(k): t for k, t in per.items()} for o, per in self.outputs.items()}
        return ParityPolicy(tolerances=tolerances, outputs=outputs)

    def tolerance(self, precision: str, output: str) -> Tolerance:
        return self.policy().tolerance(precision, output)
