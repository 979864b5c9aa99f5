"""`--set KEY=VALUE` on the typed build config: each form, and one test per error message."""

from __future__ import annotations

from typing import Any

import pytest

from compiler.core.errors import ConfigError
from compiler.core.tolerance import DEFAULT_TOLERANCES
from compiler.pipeline.config import (
    PRECISION_IS_DERIVED,
    resolve_config,
)

ALL = ["cpu", "arm", "gpu"]


# --------------------------------------------------------------------------- --set: each form


def test_set_plain_path_and_typed_values() -> None:
    cfg = resolve_config(None, ["cpu"], ["latency.runs=7", "dims.batch={min: 1, opt: 2, max: 4}"])
    assert cfg.latency.runs == 7 and cfg.dims["batch"].opt == 2


def test_set_one_tolerance_field_keeps_its_siblings() -> None:
    cfg = resolve_config(None, ["cpu"], ["parity.tolerances.fp32.atol=1e-3"])
    fp32 = cfg.parity.tolerances["fp32"]
    assert fp32.atol == pytest.approx(1e-3)
    assert (fp32.rtol, fp32.min_cosine) == (DEFAULT_TOLERANCES["fp32"].rtol, 0.99999)
    assert cfg.parity.tolerances["int8"] == DEFAULT_TOLERANCES["int8"]


def test_set_one_dim_bound_keeps_the_others() -> None:
    raw = {"dims": {"batch": {"min": 1, "opt": 2, "max": 4}}}
    cfg = resolve_config(raw, ["cpu"], ["dims.batch.max=8"])
    assert cfg.dims["batch"].model_dump() == {"min": 1, "opt": 2, "max": 8, "step": 1}


def test_set_a_new_per_output_tolerance_starts_from_the_build_tolerance() -> None:
    cfg = resolve_config(None, ["cpu"], ["parity.outputs.probs.int8.min_cosine=0.95"])
    got = cfg.parity.outputs["probs"]["int8"]
    assert got.min_cosine == 0.95 and got.min_top1 == DEFAULT_TOLERANCES["int8"].min_top1


def test_set_a_new_input_range_entry() -> None:
    cfg = resolve_config(None, ["cpu"], ["inputs.x.high=255"])
    assert cfg.inputs["x"].model_dump() == {"values": None, "low": None, "high": 255}


def test_set_reaches_a_pass_in_every_variant_of_a_target() -> None:
    cfg = resolve_config(None, ["cpu", "arm"], ["cpu.fuse.level=extended"])
    cpu_levels = {
        p.level for v in cfg.targets["cpu"].variants.values() for p in v.passes if p.name == "fuse"
    }
    arm_levels = {
        p.level for v in cfg.targets["arm"].variants.values() for p in v.passes if p.name == "fuse"
    }
    assert cpu_levels == {"extended"} and arm_levels == {"basic"}


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Dotted paths where two dumped configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}.{k}")
        ]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{path}.{i}")
        ]
    return [] if a == b else [path.lstrip(".")]


def test_set_calibration_method_reaches_every_cpu_quantize_and_nothing_else() -> None:
    raw = {
        "targets": {
            "cpu": {
                "variants": {
                    "ort-int8-dyn": {
                        "passes": [{"name": "quantize", "mode": "dynamic"}],
                        "compile": {"backend": "onnxruntime"},
                    }
                }
            }
        }
    }
    before = resolve_config(raw, ALL).model_dump(mode="json")
    after = resolve_config(raw, ALL, ["cpu.quantize.calibration_method=percentile"])
    assert _diff(before, after.model_dump(mode="json")) == [
        "targets.cpu.variants.ort-int8.passes.1.calibration_method",
        "targets.cpu.variants.ort-int8-dyn.passes.0.calibration_method",
        "targets.cpu.variants.ort-int8-rr.passes.1.calibration_method",
    ]
    methods = {
        (t, n): p.calibration_method  # type: ignore[union-attr]
        for t, c in after.targets.items()
        for n, v in c.variants.items()
        for p in v.passes
        if p.name == "quantize"
    }
    assert methods == {
        ("cpu", "ort-int8"): "percentile",
        ("cpu", "ort-int8-dyn"): "percentile",
        ("cpu", "ort-int8-rr"): "percentile",
        ("arm", "ort-int8"): "minmax",
        ("gpu", "trt-int8"): "minmax",
    }


def test_readme_example_calibration_method_entropy() -> None:
    cfg = resolve_config(None, ["cpu"], ["cpu.quantize.calibration_method=entropy"])
    quantize = cfg.targets["cpu"].variants["ort-int8"].passes[1]
    assert quantize.calibration_method == "entropy"  # type: ignore[union-attr]


def test_set_one_variant_pass_compile_and_enabled() -> None:
    cfg = resolve_config(
        None,
        ["cpu", "arm"],
        [
            "cpu.ov-int8.nncf.accuracy_control.enabled=true",
            "cpu.ov-f32.compile.num_threads=2",
            "cpu.ov-bf16.enabled=false",
        ],
    )
    cpu, arm = cfg.targets["cpu"].variants, cfg.targets["arm"].variants
    assert cpu["ov-int8"].passes[1].accuracy_control.enabled is True  # type: ignore[union-attr]
    assert arm["ov-int8"].passes[1].accuracy_control.enabled == "auto"  # type: ignore[union-attr]
    assert cpu["ov-f32"].compile.num_threads == 2  # type: ignore[union-attr]
    assert cpu["ov-bf16"].compile.num_threads == 0  # type: ignore[union-attr]
    assert cpu["ov-bf16"].enabled is False and arm["ov-f32"].enabled is True


def test_set_replaces_a_whole_variant() -> None:
    cfg = resolve_config(None, ["cpu"], ["cpu.ort-fp32={compile: {backend: onnxruntime}}"])
    assert cfg.targets["cpu"].variants["ort-fp32"].passes == []


def test_set_applies_after_the_file() -> None:
    raw = {"targets": {"cpu": {"variants": {"ort-fp32": {"compile": {"backend": "onnxruntime"}}}}}}
    cfg = resolve_config(raw, ["cpu"], ["cpu.ort-fp32.compile.graph_optimization_level=basic"])
    v = cfg.targets["cpu"].variants["ort-fp32"]
    # a listed variant starts from the pipeline's variant of that name (its passes stay)
    assert [p.name for p in v.passes] == ["simplify", "fuse"]
    assert v.compile.graph_optimization_level == "basic"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- --set: each error


def _set_error(*overrides: str) -> str:
    with pytest.raises(ConfigError) as err:
        resolve_config(None, ["cpu", "gpu"], list(overrides))
    return str(err.value)


def test_set_without_equals() -> None:
    assert _set_error("latency.runs") == (
        "--set 'latency.runs': expected KEY=VALUE, e.g. cpu.quantize.calibration_method=entropy"
    )


def test_set_empty_key_part() -> None:
    assert "--set latency..runs: empty part in the key" in _set_error("latency..runs=3")


def test_set_unknown_key_at_the_top_lists_the_valid_ones() -> None:
    msg = _set_error("latncy.runs=3")
    assert msg.startswith("--set latncy.runs: unknown key 'latncy' in the top level; valid keys")
    assert "cpu, data, dims, executor, gpu, include_reference_model, inputs, latency," in msg
    assert "<defaults>" not in msg


def test_set_unknown_pass_field_names_where_it_stopped() -> None:
    """The documented-but-wrong `method` is refused with the field it should be."""
    msg = _set_error("cpu.quantize.method=entropy")
    assert msg.startswith("--set cpu.quantize.method: unknown key 'method' in 'cpu.quantize'")
    assert "calibration_method" in msg


def test_set_unknown_variant_key_lists_fields_andvariant_passes() -> None:
    msg = _set_error("cpu.ort-int8.quantise.mode=static")
    assert msg == (
        "--set cpu.ort-int8.quantise.mode: unknown key 'quantise' in 'cpu.ort-int8'; "
        "valid keys there: compile, enabled, passes, quantize, simplify"
    )


def test_set_unknown_precision_key() -> None:
    msg = _set_error("parity.tolerances.fp64.atol=1")
    assert msg.endswith(
        "unknown key 'fp64' in 'parity.tolerances'; valid keys there: bf16, fp16, fp32, int8"
    )


def test_set_stops_short_of_a_field() -> None:
    msg = _set_error("cpu.quantize=1")
    assert msg.startswith("--set cpu.quantize: 'cpu.quantize' needs a key after it; valid keys")
    assert "calibration_method" in msg


def test_set_target_not_built() -> None:
    assert _set_error("arm.fuse.level=extended") == (
        "--set arm.fuse.level: target 'arm' is not built in this run (--targets cpu,gpu)"
    )


def test_set_pass_no_variant_has() -> None:
    msg = _set_error("gpu.nncf.preset=mixed")
    assert msg.startswith("--set gpu.nncf.preset: no variant of target 'gpu' has a 'nncf' pass")


def test_set_into_a_value() -> None:
    assert _set_error("latency.runs.min=1") == (
        "--set latency.runs.min: 'latency.runs' is a value, not a section; it has no 'min'"
    )


def test_set_value_of_the_wrong_type_names_the_key() -> None:
    assert _set_error("cpu.fuse.level=all") == (
        "--set cpu.fuse.level=all: Input should be 'basic' or 'extended'"
    )
    assert _set_error("latency.runs=0").startswith(
        "--set latency.runs=0: Input should be greater than or equal to 1"
    )


def test_set_incomplete_new_entry_names_the_missing_fields() -> None:
    msg = _set_error("dims.batch.max=8")
    assert msg == (
        "--set dims.batch.max=8: Field required (at dims.batch.min); "
        "Field required (at dims.batch.opt)"
    )


def test_set_precision_is_refused() -> None:
    assert _set_error("cpu.ov-f32.precision=bf16") == (
        f"--set cpu.ov-f32.precision: {PRECISION_IS_DERIVED}"
    )
