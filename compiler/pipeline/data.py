"""Generated sample data, and the `inputs:` and `data:` sections of the build config.

Calibration and parity data are the user's (`--sample-data`, `--calibration-data`, or a data
loader `data.loader: module:function`; compiler/pipeline/userdata.py) or generated here from
the contract. Generated data uses a fixed seed and the dims' `opt` sizes, and draws each
input from its value domain: the config's (`inputs: {sr: {values: [16000]}}`), else the one
the graph states (compiler/pipeline/domains.py), else the dtype's default (floats in [0, 1),
uint8 0..255, other integers 0..9, bools {0, 1}). So it is the same on every run and host,
and the model can run on it. Generated data tells nothing about a lossy artifact's accuracy: such an artifact is
recorded `unverified: generated data` (`generated_data_notice` tells the user once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compiler.core.contract import Contract, TensorSpec, ValueDomain, set_flag
from compiler.core.errors import ConfigError
from compiler.core.feeds import Feeds
from compiler.core.records import DataOutput

__all__ = [
    "DataConfig",
    "InputDomain",
    "default_domain",
    "domain_fixes",
    "generate_feeds",
    "generated_data_notice",
    "random_feed",
    "resolve_domains",
]


class InputDomain(BaseModel):
    """The values one input takes, for generated data (the `inputs:` section): a set
    (`values: [0, 1]`) or an interval (`low`, `high`; integers include `high`, floats draw
    from [low, high)); a bound left out is the dtype's default. Replaces what the graph says."""

    model_config = ConfigDict(extra="forbid")
    values: list[int | float] | None = None
    low: int | float | None = None
    high: int | float | None = None

    @model_validator(mode="after")
    def _one_form(self) -> InputDomain:
        if self.values is not None and (self.low is not None or self.high is not None):
            raise ValueError("give values, or low/high, not both")
        if self.values is not None and not self.values:
            raise ValueError("values: give at least one value")
        return self

    def domain(self, spec: TensorSpec) -> ValueDomain:
        if self.values is not None:
            return ValueDomain(values=self.values, source="config")
        base = default_domain(spec)
        low = self.low if self.low is not None else base.low
        high = self.high if self.high is not None else base.high
        try:
            return ValueDomain(low=low, high=high, source="config")
        except ValidationError as exc:
            raise ConfigError(f"inputs.{spec.name}: {exc.errors()[0]['msg']}") from None


class DataConfig(BaseModel):
    """Where calibration and parity samples come from (the `data:` section)."""

    model_config = ConfigDict(extra="forbid")
    loader: str | None = Field(
        default=None,
        description="module:function (or path/to/file.py:function) returning a list of feeds, "
        "or (feeds, labels); used in place of --sample-data/--calibration-data folders",
    )
    validation_fraction: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="when one user source is given, the share of its feeds kept for parity; "
        "the rest calibrates (evenly spread, in file order)",
    )
    calibration_samples: int = Field(
        default=16, ge=1, le=10_000, description="generated calibration feeds when none are given"
    )


def default_domain(spec: TensorSpec) -> ValueDomain:
    kind = np.dtype(spec.dtype).kind if spec.dtype != "bfloat16" else "f"
    if kind == "b":
        return ValueDomain(low=0, high=1, source="default for bool")
    if kind == "f":
        return ValueDomain(low=0.0, high=1.0, source=f"default for {spec.dtype}")
    if spec.dtype == "uint8":  # an image's pixels (tf2onnx's detectors) or a file's bytes
        return ValueDomain(low=0, high=255, source="default for uint8 (pixels, bytes)")
    return ValueDomain(low=0, high=9, source=f"default for {spec.dtype}")


def resolve_domains(
    contract: Contract, configured: Mapping[str, InputDomain]
) -> dict[str, ValueDomain]:
    """Input name -> the domain generated data draws from: config, else graph, else default."""
    names = [t.name for t in contract.inputs]
    unknown = sorted(set(configured) - set(names))
    if unknown:
        raise ConfigError(
            f"config gives value domains (inputs:) for {unknown}, which the model does not "
            f"take; its inputs are {names}"
        )
    return {
        t.name: configured[t.name].domain(t)
        if t.name in configured
        else t.domain or default_domain(t)
        for t in contract.inputs
    }


def _draw(
    domain: ValueDomain,
    dtype: np.dtype,
    shape: tuple[int, ...],
    rng: np.random.Generator,
    sizes: Mapping[str, int],
) -> np.ndarray:
    if domain.values is not None:
        return np.asarray(rng.choice(np.asarray(domain.values), size=shape)).astype(dtype)
    low, high = domain.low, domain.high_at(sizes)
    assert low is not None and high is not None  # ValueDomain guarantees one form
    if dtype.kind == "f":
        return np.asarray(rng.uniform(low, high, size=shape)).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = max(int(np.ceil(low)), int(info.min)), min(int(np.floor(high)), int(info.max))
        return np.asarray(rng.integers(lo, max(hi, lo), size=shape, endpoint=True)).astype(dtype)
    return np.asarray(rng.integers(int(low), int(high), size=shape, endpoint=True)).astype(dtype)


def random_feed(
    inputs: Sequence[TensorSpec],
    shapes: Mapping[str, tuple[int, ...]],
    domains: Mapping[str, ValueDomain],
    rng: np.random.Generator,
) -> Feeds:
    """One feed: each input at its shape, drawn from its domain (a scalar stays 0-d; a
    domain that ends at a dim's size ends at the size it has in this feed)."""
    sizes = {
        d: n
        for t in inputs
        for d, n in zip(t.shape, shapes[t.name], strict=False)
        if isinstance(d, str)
    }
    feed: Feeds = {}
    for t in inputs:
        dtype = np.dtype(t.dtype) if t.dtype != "bfloat16" else np.dtype("float32")
        feed[t.name] = _draw(domains[t.name], dtype, shapes[t.name], rng, sizes)
    return feed


def generate_feeds(
    contract: Contract, count: int, seed: int, domains: Mapping[str, ValueDomain]
) -> list[Feeds]:
    rng = np.random.default_rng(seed)
    shapes = contract.input_shapes("opt")
    return [random_feed(contract.inputs, shapes, domains, rng) for _ in range(count)]


def domain_fixes(contract: Contract, names: Sequence[str]) -> str:
    """`--set` options that give these inputs their values, for one-line messages."""
    specs = {t.name: t for t in contract.inputs}
    fixes = []
    for n in names:
        kind = np.dtype(specs[n].dtype).kind if specs[n].dtype != "bfloat16" else "f"
        fixes.append(
            set_flag("inputs", n, "values", value="[0,1]")
            if kind in "iub"
            else set_flag("inputs", n, "high", value="N")
        )
    return " ".join(fixes)


def generated_data_notice(data: DataOutput) -> str | None:
    """What the build prints once when a lossy artifact can only be judged on generated data;
    None when the user's data covers both calibration and parity."""
    generated = data.generated
    if not generated:
        return None
    if generated == ("calibration",):
        return (
            f"calibration used generated inputs (your data held {data.samples} feed(s), too few "
            "to split): int8 and other lossy artifacts calibrated on it are recorded "
            "'unverified: generated data' and are not served; give real calibration inputs with "
            "--calibration-data DIR"
        )
    what = "judged" if generated == ("samples",) else "calibrated and judged"
    return (
        f"no real data given: int8 and other lossy artifacts were {what} on generated inputs, "
        "so they are recorded 'unverified: generated data' and are not served; give real inputs "
        "with --sample-data DIR (split into calibration and parity feeds), or --calibration-data "
        "DIR and --sample-data DIR, or --data-loader module:function"
    )
