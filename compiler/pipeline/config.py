"""The build configuration: typed, validated, with one clear message per mistake.

A config file (YAML or TOML) maps one to one onto `BuildConfig`; an unknown key anywhere is an
error listing the valid ones (`compile-pkg schema config` prints the file's JSON Schema for
editors). `--targets` picks the targets; without it, the targets the file lists (all three if
it lists none). The file configures them, and a target key the project does not know is an
error. Each target takes its variants from a named pipeline (pipeline/pipelines.py, `default`
unless the file says otherwise). Variants the file lists are merged over the pipeline's by
name, so no default changes unless the file says so: a listed variant starts from the
pipeline's variant of that name (each key it gives replaces that key; each pass it lists
starts from the pipeline's pass of that name, `compile` from the pipeline's compile of the
same backend), a variant set to null is dropped, and the others stay. `pipeline: none` builds
only the file's variants, each from the pass and backend defaults. A variant's precision is
derived from its passes and backend (`precision`).

`--set KEY=VALUE` overrides the typed config after that (VALUE is read as YAML):

- `parity.tolerances.fp32.atol=1e-3`, `dims.batch.max=8`, `latency.runs=50`: a dotted path
  through the config's sections; one field changes and its siblings keep their values. A
  new entry of a keyed section (`dims.<dim>`, `inputs.<input>`, `parity.outputs.<output>`)
  starts empty, except a per-output tolerance, which starts from `parity.tolerances`.
- `<target>.<pass>.<field>` (`cpu.quantize.calibration_method=entropy`): that field of that
  pass in every variant of the target that has the pass; refused if none has it.
- `<target>.<variant>.<pass|compile|enabled>...` (`cpu.ov-int8.nncf.preset=mixed`,
  `gpu.trt-fp16.compile.workspace_mib=512`, `arm.tvm-fp32.enabled=false`): one variant.

An unknown key is refused with the valid keys at the level where it stopped; a value of the
wrong type is refused naming the key. Errors name their source: the config file's path or
`--set KEY`.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from compiler.core.contract import DimRange
from compiler.core.errors import ConfigError
from compiler.core.hashing import sha256_json
from compiler.core.policies import LatencyPolicy, PackageMeta, PackagePolicy, SelectionPolicy
from compiler.core.targets import check_targets
from compiler.pipeline.data import DataConfig, InputDomain
from compiler.pipeline.overrides import apply_override
from compiler.pipeline.parity_config import ParityConfig
from compiler.pipeline.pipelines import PIPELINES
from compiler.pipeline.variant import PRECISION_IS_DERIVED, VariantConfig, lossiest

__all__ = [
    "PRECISION_IS_DERIVED",
    "BuildConfig",
    "EXECUTOR_KINDS",
    "ExecutorConfig",
    "ParityConfig",
    "ServingConfig",
    "TuningConfig",
    "VariantConfig",
    "ALL_TARGETS",
    "apply_override",
    "config_file_schema",
    "load_config",
    "lossiest",
    "resolve_config",
]


# what a build makes when neither --targets nor the config file names targets
ALL_TARGETS = ("gpu", "cpu", "arm")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TargetConfig(_Strict):
    pipeline: str = Field(default="default", description="`none`: only the listed variants")
    variants: dict[str, VariantConfig] = Field(default_factory=dict)


class NormalizeConfig(_Strict):
    min_opset: int = Field(default=13, ge=7, description="older models are upgraded to this")


class VerifyConfig(_Strict):
    """Extra verification during a build."""

    emulate_arm: bool = Field(
        default=False,
        description="run arm artifacts with the aarch64 runtimes under qemu (scripts/setup_emulation.sh)",
    )
    retime_slow: bool = Field(
        default=True,
        description="after the build, measure again each artifact whose reference ran more "
        "than 10% slower than the build's fastest reference (the host was slow then; "
        "compiler/packaging/retime.py)",
    )


class TuningConfig(_Strict):
    """Runtime settings chosen by measurement (compiler/measure/tuning.py): a short sweep of
    ONNX Runtime and OpenVINO artifacts at build (by default only of serving's pick on the
    build host; every artifact that passes parity with `enabled`), recorded outside the
    manifest's core and applied by serving on a host like the build host."""

    enabled: bool = Field(
        default=False,
        description="sweep threads, spinning, execution mode (ORT), hint, streams, threads and a "
        "compile per input shape (OpenVINO) per artifact that passes parity; adopted only when "
        "faster beyond the interval",
    )
    pick: bool = Field(
        default=True,
        description="where `enabled` is off: after the build, sweep only the artifact serving "
        "picks on the build host (the first after the reference where that is the pick), "
        "and time it again with what the sweep adopted (compiler/packaging/tune_pick.py)",
    )
    seconds_per_artifact: float = Field(
        default=10.0,
        gt=0,
        description="the sweep's time cap per artifact, worker start-ups included",
    )


class ServingConfig(_Strict):
    """How the package will be served: the batch sizes whose throughput verify measures."""

    batch_sizes: list[int] = Field(
        default_factory=lambda: [1],
        min_length=1,
        description="items/s at each batch next to the reference at the same batch (a batch "
        "the contract does not allow is skipped with the reason)",
    )

    @field_validator("batch_sizes")
    @classmethod
    def _positive_unique(cls, sizes: list[int]) -> list[int]:
        if any(b < 1 for b in sizes):
            raise ValueError(f"batch sizes must be >= 1, got {sizes}")
        return sorted(set(sizes))


EXECUTOR_KINDS = ("in-process", "processes", "ray")


class ExecutorConfig(_Strict):
    """How a build runs its nodes (pipeline/executors/). It changes where the work happens,
    never what is built, so it stays out of the manifest and the config digest."""

    kind: Literal["in-process", "processes", "ray"] = Field(
        default="processes",
        description="`processes`: each node in its own worker process (a crash fails only it); "
        "`ray`: each node a task on the Ray cluster at `address` (pip install 'compile-pkg[ray]')",
    )
    address: str = Field(
        default="",
        description="ray: the cluster (`HOST:PORT` of a head this machine belongs to, or "
        "`ray://HOST:PORT` through Ray Client); empty: the local cluster, started if none runs",
    )
    resources: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="ray: Ray resources a node needs, by node id, `KIND:TARGET` or `KIND` (first "
        "match), e.g. `compile:gpu: {compile_pkg_gpu_cc_9_0: 1, GPU: 1}`, `verify:arm: {aarch64: 1}`",
    )
    retries: int = Field(
        default=3,
        ge=0,
        description="ray: times a node is run again after its worker or Ray node dies",
    )
    workers: int = Field(
        default=0, ge=0, description="nodes run at once; 0: the cores this process may use"
    )
    memory_mb: int = Field(
        default=0,
        ge=0,
        description="address space a worker may grow by while it runs its node (RLIMIT_AS); "
        "0: no limit",
    )
    wall_s: float = Field(
        default=0.0,
        ge=0.0,
        description="seconds a node may run before its worker is killed; 0: none",
    )
    memory_margin_mb: int = Field(
        default=1024,
        ge=-1,
        description="processes: a node starts beside others only if its estimated peak memory "
        "plus this margin fits in what the host (or cgroup) has left; -1: no such check",
    )
    retry_failed: bool = Field(
        default=False,
        description="run compiles and passes again whose failure an earlier build with the "
        "same inputs and libraries left in the cache (a backend refusing the model)",
    )
    exclusive: list[str] = Field(
        default_factory=lambda: ["verify"],
        description="node kinds that run alone (they measure latency on this host's cores)",
    )


class BuildConfig(_Strict):
    schema_version: Literal[1] = 1
    package: PackageMeta = Field(default_factory=PackageMeta)
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    dims: dict[str, DimRange] = Field(default_factory=dict)
    inputs: dict[str, InputDomain] = Field(default_factory=dict)
    data: DataConfig = Field(default_factory=DataConfig)
    targets: dict[str, TargetConfig] = Field(default_factory=dict)
    parity: ParityConfig = Field(default_factory=ParityConfig)
    latency: LatencyPolicy = Field(default_factory=LatencyPolicy)
    selection: SelectionPolicy = Field(default_factory=SelectionPolicy)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    include_reference_model: bool = True
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig, exclude=True)

    def digest(self) -> str:
        return sha256_json(self.model_dump(mode="json"))

    def policy(self) -> PackagePolicy:
        """What decides this build's verdicts, recorded in the manifest for serving."""
        return PackagePolicy(
            parity=self.parity.policy(), latency=self.latency, selection=self.selection
        )


# --------------------------------------------------------------------------- config files


def _section_keys(loc: Sequence[int | str]) -> list[str]:
    """The keys valid in the config section at `loc` (its parent, for an unknown key)."""
    model: type[BaseModel] = BuildConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)


def _format_validation(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        valid = _section_keys(err["loc"]) if err["type"] == "extra_forbidden" else []
        if valid:
            msg = f"unknown key; valid keys there: {', '.join(valid)}"
        lines.append(f"  {loc or '<root>'}: {msg}")
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


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}: {value!r}")
    return value


def _expand_target(target: str, entry: dict[str, Any], source: str) -> dict[str, Any]:
    """The target's settings with the pipeline's variants merged under the file's."""
    name = entry.get("pipeline", "default")
    try:
        factory = PIPELINES[target][name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"config {source}: target {target}: no pipeline named '{name}'; "
            f"known: {sorted(PIPELINES[target])}"
        ) from None
    variants: dict[str, Any] = {k: v.model_dump(mode="json") for k, v in factory().items()}
    where = f"config {source}: targets.{target}.variants"
    for vname, vdata in _mapping(entry.get("variants"), where).items():
        if vdata is None:
            variants.pop(vname, None)
            continue
        if isinstance(vdata, dict) and "precision" in vdata:
            raise ConfigError(f"{where}.{vname}.precision: {PRECISION_IS_DERIVED}")
        base = variants.get(vname)
        variants[vname] = _merge_variant(base, vdata) if isinstance(vdata, dict) and base else vdata
    return {**entry, "variants": variants}


def _deep_merge(base: dict[str, Any], mine: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in mine.items():
        old = merged.get(key)
        both = isinstance(old, dict) and isinstance(value, dict)
        merged[key] = _deep_merge(old, value) if both else value  # type: ignore[arg-type]
    return merged


def _merge_variant(base: dict[str, Any], mine: dict[str, Any]) -> dict[str, Any]:
    """The file's variant over the pipeline's of the same name: given keys replace; a listed
    pass starts from the pipeline's pass of that name, `compile` from the pipeline's compile
    when the backend is the same, so a setting the file does not mention keeps its default."""
    merged = dict(base)
    for key, value in mine.items():
        if key == "passes" and isinstance(value, list):
            unused = list(base.get("passes", []))
            passes = []
            for item in value:
                name = item.get("name") if isinstance(item, dict) else None
                same = next((p for p in unused if p.get("name") == name), None)
                if same is not None and isinstance(item, dict):
                    unused.remove(same)
                    item = _deep_merge(same, item)
                passes.append(item)
            merged[key] = passes
        elif key == "compile" and isinstance(value, dict):
            old = base.get("compile", {})
            same_backend = value.get("backend", old.get("backend")) == old.get("backend")
            merged[key] = _deep_merge(old, value) if same_backend else value
        else:
            merged[key] = value
    return merged


def resolve_config(
    raw: dict[str, Any] | None,
    targets: Sequence[str] | None,
    overrides: Sequence[str] = (),
    source: str = "<defaults>",
) -> BuildConfig:
    """Expand pipelines into variants for `targets` (None: the file's targets, else all),
    validate, then apply `--set` overrides. `config.targets` lists the targets to build."""
    data = json.loads(json.dumps(raw or {}))  # deep copy of plain data
    in_file = _mapping(data.get("targets"), f"config {source}: targets")
    if in_file:
        check_targets(in_file, where=f"config {source}: targets")
    picked = check_targets(targets if targets is not None else (list(in_file) or ALL_TARGETS))
    data["targets"] = {
        t: _expand_target(t, _mapping(in_file.get(t), f"config {source}: targets.{t}"), source)
        for t in picked  # the command line picks the targets; the file configures them
    }
    try:
        config = BuildConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source)) from None
    for item in overrides:
        config = _override(config, item)
    return config


def _override(config: BuildConfig, item: str) -> BuildConfig:
    """One `--set`; `executor.FIELD=VALUE` sets the executor section (which dumps leave out,
    so the general override path cannot reach it)."""
    if not item.startswith("executor."):
        return apply_override(config, item).model_copy(update={"executor": config.executor})
    key, _, text = item.partition("=")
    field = key.removeprefix("executor.").strip()
    valid = sorted(ExecutorConfig.model_fields)
    if field not in valid:
        raise ConfigError(f"--set {key}: unknown key '{field}'; valid keys: {', '.join(valid)}")
    raw = {**config.executor.model_dump(), field: yaml.safe_load(text.strip())}
    try:
        executor = ExecutorConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(e["msg"] for e in exc.errors())
        raise ConfigError(f"--set {key}={text.strip()}: {problems}") from None
    return config.model_copy(update={"executor": executor})


def load_config(
    path: Path | None, targets: Sequence[str] | None, overrides: Sequence[str] = ()
) -> BuildConfig:
    raw = _read_file(path) if path else {}
    return resolve_config(raw, targets, overrides, source=str(path) if path else "<defaults>")


def config_file_schema() -> dict[str, Any]:
    """The JSON Schema of a config file (`compile-pkg schema config`): `BuildConfig`'s, where a
    listed variant may be partial (it merges over the pipeline's) or null (dropped)."""
    schema = BuildConfig.model_json_schema()
    defs = schema.get("$defs", {})
    variant = defs.get("VariantConfig")
    if variant is not None:
        variant.pop("required", None)
    target = defs.get("TargetConfig", {}).get("properties", {}).get("variants")
    if target is not None:
        target["additionalProperties"] = {
            "anyOf": [{"$ref": "#/$defs/VariantConfig"}, {"type": "null"}]
        }
    schema["title"] = "compile-pkg build config"
    return schema
