"""The build configuration: typed, validated, with one clear message per mistake.

A config file (YAML or TOML) maps one to one onto `BuildConfig`. Targets take their variants
from a named pipeline (compiler/pipelines.py) unless the file lists them; `--set a.b.c=v`
overrides any field after the pipeline is expanded, so `--set cpu.quantize.method=entropy`
changes the quantize pass of every cpu variant that has one.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from compiler.core.contract import DimRange
from compiler.core.errors import ConfigError
from compiler.core.hashing import sha256_json
from compiler.core.policies import LatencyPolicy, PackageMeta, PackagePolicy, SelectionPolicy
from compiler.core.tolerance import DEFAULT_TOLERANCES, ParityPolicy, Precision, Tolerance
from passes.registry import AnyPassConfig
from targets.registry import TARGETS, BackendOptionsUnion

__all__ = [
    "BuildConfig",
    "ParityConfig",
    "VariantConfig",
    "load_config",
    "resolve_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariantConfig(_Strict):
    """One artifact of a target: graph passes after normalize, then a backend compile."""

    passes: list[AnyPassConfig] = Field(default_factory=list)
    compile: BackendOptionsUnion
    precision: Precision = "fp32"
    enabled: bool = True


class TargetConfig(_Strict):
    pipeline: str = "default"
    variants: dict[str, VariantConfig] | None = None  # None: take the pipeline's


class ParityConfig(_Strict):
    """The `parity:` block: tolerances (filled with the defaults) and per-output overrides, plus
    how many samples to generate when the user gives none."""

    tolerances: dict[Precision, Tolerance] = Field(
        default_factory=lambda: dict(DEFAULT_TOLERANCES)  # type: ignore[arg-type]
    )
    outputs: dict[str, dict[Precision, Tolerance]] = Field(
        default_factory=dict, description="per-output overrides, by output name then precision"
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


class InputRange(_Strict):
    """Value range of generated sample data for one input."""

    low: float = 0.0
    high: float = 1.0


class NormalizeConfig(_Strict):
    min_opset: int = Field(default=13, ge=7, description="older models are upgraded to this")


class VerifyConfig(_Strict):
    """Extra verification during a build."""

    emulate_arm: bool = Field(
        default=False,
        description="run arm artifacts with the aarch64 runtimes under qemu (scripts/setup_emulation.sh)",
    )


class BuildConfig(_Strict):
    schema_version: Literal[1] = 1
    package: PackageMeta = Field(default_factory=PackageMeta)
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    dims: dict[str, DimRange] = Field(default_factory=dict)
    inputs: dict[str, InputRange] = Field(default_factory=dict)
    targets: dict[str, TargetConfig] = Field(default_factory=dict)
    parity: ParityConfig = Field(default_factory=ParityConfig)
    latency: LatencyPolicy = Field(default_factory=LatencyPolicy)
    selection: SelectionPolicy = Field(default_factory=SelectionPolicy)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    include_reference_model: bool = True

    @field_validator("targets", mode="after")
    @classmethod
    def _known_targets(cls, v: dict[str, TargetConfig]) -> dict[str, TargetConfig]:
        unknown = sorted(set(v) - set(TARGETS))
        if unknown:
            raise ValueError(f"unknown targets {unknown}; known: {sorted(TARGETS)}")
        return v

    def digest(self) -> str:
        return sha256_json(self.model_dump(mode="json"))

    def policy(self) -> PackagePolicy:
        """What decides this build's verdicts, recorded in the manifest for serving."""
        return PackagePolicy(
            parity=self.parity.policy(), latency=self.latency, selection=self.selection
        )


def _format_validation(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"  {loc or '<root>'}: {err['msg']}")
    return "\n".join(lines)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"config {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}"
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _apply_override(data: dict[str, Any], key: str, value: Any) -> int:
    """Set `key` (dotted) in the raw config; returns how many places it changed.

    `<target>.<pass>.<field>` addresses that pass in every variant of the target,
    `<target>.<variant>.<pass|compile|precision>...` one variant; anything else is a plain path.
    """
    parts = key.split(".")
    if parts[0] in TARGETS and len(parts) >= 3:
        variants = data.get("targets", {}).get(parts[0], {}).get("variants") or {}
        names = [parts[1]] if parts[1] in variants else list(variants)
        rest = parts[2:] if parts[1] in variants else parts[1:]
        changed = 0
        for name in names:
            v = variants[name]
            if rest[0] in ("compile", "precision", "enabled"):
                changed += _set_path(v, rest, value)
                continue
            for p in v.get("passes", []):
                if p.get("name") == rest[0]:
                    changed += _set_path(p, rest[1:], value)
        return changed
    return _set_path(data, parts, value)


def _set_path(node: dict[str, Any], parts: list[str], value: Any) -> int:
    if not parts:
        return 0
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            return 0
        node = nxt
    node[parts[-1]] = value
    return 1


def resolve_config(
    raw: dict[str, Any] | None,
    targets: list[str],
    overrides: list[str] = (),  # type: ignore[assignment]
    source: str = "<defaults>",
) -> BuildConfig:
    """Expand pipelines into variants for `targets`, apply `--set` overrides, validate."""
    from compiler.pipeline.pipelines import PIPELINES

    data = json.loads(json.dumps(raw or {}))  # deep copy of plain data
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise ConfigError(f"unknown targets {unknown} in --targets; known: {sorted(TARGETS)}")
    tcfg = data.setdefault("targets", {})
    for t in list(tcfg):
        if t not in targets:
            del tcfg[t]  # the command line picks the targets; the file configures them
    for t in targets:
        entry = tcfg.setdefault(t, {}) or {}
        tcfg[t] = entry
        if entry.get("variants") is None:
            name = entry.get("pipeline", "default")
            try:
                factory = PIPELINES[t][name]
            except KeyError:
                raise ConfigError(
                    f"target {t}: no pipeline named '{name}'; known: {sorted(PIPELINES.get(t, {}))}"
                ) from None
            entry["variants"] = {k: v.model_dump(mode="json") for k, v in factory().items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"--set {item!r}: expected KEY=VALUE, e.g. cpu.quantize.method=entropy"
            )
        if _apply_override(data, key.strip(), _parse_value(value.strip())) == 0:
            raise ConfigError(
                f"--set {key}: no such setting in the resolved config (targets {targets})"
            )
    try:
        return BuildConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source)) from None


def load_config(path: Path | None, targets: list[str], overrides: list[str] = ()) -> BuildConfig:  # type: ignore[assignment]
    raw = _read_file(path) if path else {}
    return resolve_config(raw, targets, list(overrides), source=str(path) if path else "<defaults>")
