"""The typed build config: files, default pipelines and derived precision, one test per error
message (`--set` overrides: test_overrides.py)."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from compiler.core.errors import ConfigError
from compiler.pipeline.config import (
    PRECISION_IS_DERIVED,
    config_file_schema,
    load_config,
    lossiest,
    resolve_config,
)
from compiler.pipeline.variant import judged_precision

ALL = ["cpu", "arm", "gpu"]


# --------------------------------------------------------------------------- default pipelines


def test_defaults_expand_the_pipeline_per_target() -> None:
    cfg = resolve_config(None, ["cpu", "arm"])
    assert set(cfg.targets) == {"cpu", "arm"}
    assert cfg.targets["cpu"].variants["ort-fp32"].compile.backend == "onnxruntime"


@pytest.mark.parametrize(
    ("target", "variant", "passes", "backend", "precision"),
    [
        ("cpu", "ort-fp32", ["simplify", "fuse"], "onnxruntime", "fp32"),
        ("cpu", "ort-int8", ["simplify", "quantize"], "onnxruntime", "int8"),
        ("cpu", "ort-int8-rr", ["simplify", "quantize"], "onnxruntime", "int8"),
        ("cpu", "ov-f32", [], "openvino", "fp32"),
        ("cpu", "ov-bf16", [], "openvino", "bf16"),
        ("cpu", "ov-int8", ["simplify", "nncf"], "openvino", "int8"),
        ("arm", "ort-fp32", ["simplify", "fuse"], "onnxruntime", "fp32"),
        ("arm", "ort-int8", ["simplify", "quantize"], "onnxruntime", "int8"),
        ("arm", "ov-f32", [], "openvino", "fp32"),
        ("arm", "ov-int8", ["simplify", "nncf"], "openvino", "int8"),
        ("gpu", "trt-fp32", [], "tensorrt", "fp32"),
        ("gpu", "trt-fp16", [], "tensorrt", "fp16"),
        ("gpu", "trt-int8", ["quantize"], "tensorrt", "int8"),
        ("gpu", "tvm-fp32", ["simplify"], "tvm", "fp32"),
        ("gpu", "tvm-fp16", ["simplify", "fp16"], "tvm", "fp16"),
    ],
)
def test_default_pipelines_and_their_derived_precision(
    target: str, variant: str, passes: list[str], backend: str, precision: str
) -> None:
    v = resolve_config(None, ALL).targets[target].variants[variant]
    assert [p.name for p in v.passes] == passes
    assert v.compile.backend == backend
    assert v.precision == precision


def test_default_variant_names() -> None:
    cfg = resolve_config(None, ALL)
    assert {t: sorted(c.variants) for t, c in cfg.targets.items()} == {
        "cpu": ["ort-fp32", "ort-int8", "ort-int8-rr", "ov-bf16", "ov-f32", "ov-int8"],
        "arm": ["ort-fp32", "ort-int8", "ov-f32", "ov-int8"],
        "gpu": ["trt-fp16", "trt-fp32", "trt-int8", "tvm-fp16", "tvm-fp32"],
    }
    ort_int8 = cfg.targets["cpu"].variants["ort-int8"].passes[1]
    trt_int8 = cfg.targets["gpu"].variants["trt-int8"].passes[0]
    assert ort_int8.accuracy_aware.enabled == "auto"  # type: ignore[union-attr]
    assert trt_int8.mode == "static"  # type: ignore[union-attr]


def test_untuned_tvm_cpu_and_arm_are_opt_in() -> None:
    """Untuned TVM CPU code is many times slower than the reference: not built by default."""
    raw = {"targets": {t: {"pipeline": "with-tvm"} for t in ("cpu", "arm")}}
    opt_in = resolve_config(raw, ["cpu", "arm"])
    assert all("tvm-fp32" in opt_in.targets[t].variants for t in ("cpu", "arm"))
    tuned = resolve_config({"targets": {"cpu": {"pipeline": "tvm-tuned"}}}, ["cpu"])
    assert tuned.targets["cpu"].variants["tvm-fp32"].compile.tuning_trials > 0  # type: ignore[union-attr]


# --------------------------------------------------------------------------- derived precision


@pytest.mark.parametrize(
    ("precisions", "lossiest_one"),
    [
        ([], "fp32"),
        ([None, None], "fp32"),
        (["fp32"], "fp32"),
        ([None, "fp16", "fp32"], "fp16"),
        (["bf16", "fp32"], "bf16"),
        (["fp16", "bf16"], "bf16"),  # one tier; bf16 has the looser tolerance
        (["int8", "bf16"], "int8"),
        (["fp16", None, "int8", "fp32"], "int8"),
    ],
)
def test_precision_is_the_lossiest(precisions: list[str | None], lossiest_one: str) -> None:
    assert lossiest(precisions) == lossiest_one


@pytest.mark.parametrize(
    ("built", "own", "source", "judged"),
    [
        ("fp32", "fp32", "fp32", "fp32"),
        ("int8", "int8", "fp32", "int8"),  # quantized here: lossy against the reference
        ("int8", "fp32", "int8", "fp32"),  # computes the source's own int8 as it does
        ("int8", "int8", "int8", "fp32"),
        ("int8", "bf16", "int8", "int8"),  # bf16 float ops around the source's int8
        ("fp16", "fp32", "fp16", "fp32"),
        ("bf16", "bf16", "fp16", "bf16"),
        ("int8", "int8", "fp16", "int8"),
    ],
)
def test_lossy_only_against_the_reference(built: str, own: str, source: str, judged: str) -> None:
    assert judged_precision(built, own, source) == judged


@pytest.mark.parametrize(
    ("overrides", "variant", "precision"),
    [
        (["cpu.ov-f32.compile.inference_precision=bf16"], ("cpu", "ov-f32"), "bf16"),
        (["cpu.ov-bf16.compile.inference_precision=f32"], ("cpu", "ov-bf16"), "fp32"),
        (["gpu.trt-fp32.compile.precision=bf16"], ("gpu", "trt-fp32"), "bf16"),
        (["gpu.trt-int8.compile.precision=fp16"], ("gpu", "trt-int8"), "int8"),
        (["gpu.tvm-fp16.fp16.keep_io_types=false"], ("gpu", "tvm-fp16"), "fp16"),
    ],
)
def test_precision_follows_passes_and_backend_options(
    overrides: list[str], variant: tuple[str, str], precision: str
) -> None:
    cfg = resolve_config(None, ALL, overrides)
    assert cfg.targets[variant[0]].variants[variant[1]].precision == precision


def test_precision_in_a_file_variant_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "targets:\n  cpu:\n    variants:\n"
        "      mine: {compile: {backend: openvino}, precision: bf16}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, ["cpu"])
    assert str(err.value) == (
        f"config {path}: targets.cpu.variants.mine.precision: {PRECISION_IS_DERIVED}"
    )
    assert "\n" not in str(err.value) and "inference_precision: bf16" in str(err.value)


# --------------------------------------------------------------------------- config files


def test_config_file_yaml_and_toml(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("package: {name: demo, license: Apache-2.0}\nlatency: {runs: 3}\n")
    t = tmp_path / "c.toml"
    t.write_text('[package]\nname = "demo"\n[latency]\nruns = 3\n')
    for path in (y, t):
        cfg = load_config(path, ["cpu"])
        assert cfg.package.name == "demo" and cfg.latency.runs == 3


def test_config_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("latency: {runz: 3}\n")
    with pytest.raises(
        ConfigError, match=r"invalid config .*bad.yaml:\n  latency.runz: unknown key; valid keys"
    ):
        load_config(bad, ["cpu"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("latency: [\n")
    with pytest.raises(ConfigError, match="broken.yaml is not valid yaml"):
        load_config(broken, ["cpu"])
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml", ["cpu"])


def test_unknown_pipeline(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("targets: {cpu: {pipeline: turbo}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["cpu"])
    assert str(err.value) == (
        f"config {path}: target cpu: no pipeline named 'turbo'; known: "
        "['default', 'none', 'transformer', 'tvm-tuned', 'with-tvm']"
    )


def test_unknown_target_on_the_command_line() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config(None, ["cpu", "tpu"])
    assert (
        str(err.value) == "--targets: unknown target(s) ['tpu']; choose from ['arm', 'cpu', 'gpu']"
    )


def test_unknown_target_key_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("targets: {cpu: {}, cpux: {pipeline: default}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["cpu"])
    assert str(err.value) == (
        f"config {path}: targets: unknown target(s) ['cpux']; choose from ['arm', 'cpu', 'gpu']"
    )


def test_target_entry_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("targets: {cpu: default}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: targets.cpu must be a mapping, got str"):
        load_config(path, ["cpu"])


def test_the_command_line_picks_the_targets() -> None:
    """A file configuring only cpu builds what --targets says; its arm settings are unused."""
    raw = {"targets": {"cpu": {"pipeline": "none"}, "arm": {"pipeline": "none"}}}
    cfg = resolve_config(raw, ["cpu", "gpu"])
    assert list(cfg.targets) == ["cpu", "gpu"]
    assert cfg.targets["cpu"].variants == {} and "trt-fp32" in cfg.targets["gpu"].variants


def test_file_variants_merge_over_the_pipeline() -> None:
    """A listed variant starts from the pipeline's of that name; the others stay."""
    mine = {"compile": {"backend": "onnxruntime", "graph_optimization_level": "basic"}}
    raw = {"targets": {"cpu": {"variants": {"mine": mine, "ort-fp32": mine, "ov-bf16": None}}}}
    variants = resolve_config(raw, ["cpu"]).targets["cpu"].variants
    assert sorted(variants) == ["mine", "ort-fp32", "ort-int8", "ort-int8-rr", "ov-f32", "ov-int8"]
    assert [p.name for p in variants["ort-fp32"].passes] == ["simplify", "fuse"]  # kept
    assert variants["ort-fp32"].compile.graph_optimization_level == "basic"  # type: ignore[union-attr]
    assert variants["mine"].passes == []  # a new variant: only what the file says
    assert variants["ort-int8"].precision == "int8"


def test_listing_a_variant_keeps_the_settings_it_does_not_mention() -> None:
    """Changing the calibration method of ort-int8 keeps its accuracy-aware loop on, and
    `passes: [...]` keeps each listed pass's pipeline settings."""
    quantize = {"name": "quantize", "calibration_method": "entropy"}
    raw = {
        "targets": {"cpu": {"variants": {"ort-int8": {"passes": [{"name": "simplify"}, quantize]}}}}
    }
    variant = resolve_config(raw, ["cpu"]).targets["cpu"].variants["ort-int8"]
    q = variant.passes[1]
    assert q.calibration_method == "entropy"  # type: ignore[union-attr]
    assert q.accuracy_aware.enabled == "auto"  # type: ignore[union-attr]
    assert variant.compile.backend == "onnxruntime"
    nested = {"name": "quantize", "accuracy_aware": {"max_float_layers": 2}}
    raw = {"targets": {"cpu": {"variants": {"ort-int8": {"passes": [nested]}}}}}
    q = resolve_config(raw, ["cpu"]).targets["cpu"].variants["ort-int8"].passes[0]
    assert q.accuracy_aware.enabled == "auto" and q.accuracy_aware.max_float_layers == 2  # type: ignore[union-attr]
    other = {"compile": {"backend": "openvino"}}  # another backend: its own defaults
    raw = {"targets": {"cpu": {"variants": {"ort-fp32": other}}}}
    compiled = resolve_config(raw, ["cpu"]).targets["cpu"].variants["ort-fp32"].compile
    assert compiled.backend == "openvino"


def test_a_config_listing_targets_builds_only_those() -> None:
    raw = {"targets": {"cpu": {"pipeline": "none"}}}
    assert list(resolve_config(raw, None).targets) == ["cpu"]
    assert list(resolve_config(None, None).targets) == ["gpu", "cpu", "arm"]
    assert list(resolve_config(raw, ["arm"]).targets) == ["arm"]  # --targets still decides


def test_unknown_top_level_key_lists_the_valid_ones(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("targts: {cpu: {}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, None)
    assert f"invalid config {path}:\n  targts: unknown key; valid keys there: data, dims," in str(
        err.value
    )
    assert "targets" in str(err.value)


def test_the_published_config_schema_validates_files(tmp_path: Path) -> None:
    schema = config_file_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    good = {
        "package": {"name": "orientation", "version": "1.2.0"},
        "targets": {
            "cpu": {"variants": {"ort-int8": {"passes": [{"name": "quantize"}]}, "ov-bf16": None}}
        },
        "latency": {"warmup": 5},
    }
    jsonschema.validate(good, schema)
    resolve_config(good, None)  # and the loader agrees
    for bad in (
        {"targts": {}},
        {"targets": {"cpu": {"pipline": "none"}}},
        {"latency": {"runz": 1}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_pipeline_none_builds_only_the_file_variants() -> None:
    raw = {
        "targets": {
            "cpu": {
                "pipeline": "none",
                "variants": {"mine": {"compile": {"backend": "onnxruntime"}}},
            }
        }
    }
    assert list(resolve_config(raw, ["cpu"]).targets["cpu"].variants) == ["mine"]
