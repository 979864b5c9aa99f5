"""TensorRT options and their translation into builder settings (no TensorRT needed): profiles
from the contract's dim ranges, builder flags per precision, the settings digest, and what
the build GPU must have."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx import TensorProto, helper
from pydantic import ValidationError

from compiler.core.contract import DimRange
from compiler.core.errors import ConfigError
from compiler.pipeline.interface import extract_contract
from targets.tensorrt.engine import check_build_gpu
from targets.tensorrt.options import (
    BUILDER_FLAGS,
    NETWORK_FLAGS,
    TensorRTOptions,
    builder_settings,
    derive_profiles,
)
from targets.tensorrt.spec import SPEC_FILE, read_spec
from tests.models import tiny_mlp
from tests.targets.builders import qdq_mlp
from tests.targets.tensorrt_data import A10, BATCH, T4, build, mlp_contract


def test_options_reject_lean_runtime_without_version_compatibility() -> None:
    with pytest.raises(ValidationError, match="exclude_lean_runtime needs version_compatible"):
        TensorRTOptions(exclude_lean_runtime=True)
    with pytest.raises(ValidationError):
        TensorRTOptions(hardware_compatibility="turing_plus")  # type: ignore[arg-type]


def test_profile_from_contract_dim_ranges() -> None:
    (p,) = derive_profiles(mlp_contract())
    assert p.inputs["x"].model_dump() == {"min": [1, 8], "opt": [4, 8], "max": [16, 8]}
    assert p.dims == BATCH


def test_profiles_for_several_symbolic_dims_and_inputs() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])
    m = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "seq"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])
    fixed = helper.make_tensor_value_info("fixed", TensorProto.FLOAT, [2, 8])
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x, m, fixed], [y]))
    dims = {"batch": DimRange(min=1, opt=2, max=8), "seq": DimRange(min=16, opt=128, max=512)}
    (p,) = derive_profiles(extract_contract(model, dims))
    assert sorted(p.inputs) == ["mask", "x"]  # static inputs need no profile
    assert p.inputs["x"].max == [8, 512, 8] and p.inputs["mask"].min == [1, 16]


def test_profile_overrides_narrow_the_contract_range() -> None:
    overrides = [
        {"batch": DimRange(min=1, opt=1, max=1)},
        {"batch": DimRange(min=2, opt=8, max=16)},
    ]
    small, large = derive_profiles(mlp_contract(), overrides)
    assert small.inputs["x"].max == [1, 8] and large.inputs["x"].opt == [8, 8]
    with pytest.raises(ConfigError, match=r"profiles\[0\]: dim 'batch' range \[1, 64\] leaves"):
        derive_profiles(mlp_contract(), [{"batch": DimRange(min=1, opt=1, max=64)}])
    with pytest.raises(ConfigError, match="'seq' is not a symbolic dim"):
        derive_profiles(mlp_contract(), [{"seq": DimRange(min=1, opt=1, max=2)}])


def test_profile_needs_a_range_for_every_dynamic_dim() -> None:
    c = mlp_contract()
    c.dims = {}
    with pytest.raises(ConfigError, match=r"symbolic dims \['batch'\] have no range"):
        derive_profiles(c)


def test_static_model_has_no_profile() -> None:
    contract = extract_contract(tiny_mlp(batch=2))
    assert derive_profiles(contract) == []
    with pytest.raises(ConfigError, match="all static"):
        derive_profiles(contract, [{"batch": DimRange(min=1, opt=1, max=1)}])


@pytest.mark.parametrize(
    ("precision", "opts", "flags", "cleared", "network"),
    [
        ("fp32", {}, [], ["TF32"], []),
        ("fp32", {"tf32": True}, ["TF32"], [], []),
        ("fp16", {}, ["FP16"], ["TF32"], []),
        ("bf16", {}, ["BF16"], ["TF32"], []),
        ("fp16", {"version_compatible": True, "exclude_lean_runtime": True},
         ["EXCLUDE_LEAN_RUNTIME", "FP16", "VERSION_COMPATIBLE"], ["TF32"], []),
        ("fp16", {"strongly_typed": True}, [], [], ["STRONGLY_TYPED"]),
    ],
)  # fmt: skip
def test_builder_settings_from_options(
    precision: str,
    opts: dict[str, object],
    flags: list[str],
    cleared: list[str],
    network: list[str],
) -> None:
    s = builder_settings(TensorRTOptions(**opts), precision, mlp_contract(), tiny_mlp())  # type: ignore[arg-type]
    assert (s.builder_flags, s.cleared_flags, s.network_flags) == (flags, cleared, network)
    assert set(s.builder_flags) | set(s.cleared_flags) <= BUILDER_FLAGS
    assert set(s.network_flags) <= NETWORK_FLAGS
    assert s.quantization == "none" and s.precision == precision


def test_builder_settings_workspace_hardware_level_and_timing_cache() -> None:
    opts = TensorRTOptions(workspace_mib=512, hardware_compatibility="ampere_plus",
                           builder_optimization_level=5, timing_cache=False)  # fmt: skip
    s = builder_settings(opts, "fp16", mlp_contract(), tiny_mlp())
    assert s.workspace_bytes == 512 << 20
    assert s.hardware_compatibility_level == "AMPERE_PLUS"
    assert s.builder_optimization_level == 5 and s.timing_cache is False
    default = builder_settings(TensorRTOptions(), "fp16", mlp_contract(), tiny_mlp())
    assert default.workspace_bytes is None


def test_int8_needs_a_qdq_model_and_says_what_unquantized_layers_run_in() -> None:
    with pytest.raises(ConfigError, match="int8 needs a QDQ model"):
        builder_settings(TensorRTOptions(), "int8", mlp_contract(), tiny_mlp())
    mixed = builder_settings(TensorRTOptions(), "int8", mlp_contract(), qdq_mlp())
    assert mixed.quantization == "qdq" and mixed.network_flags == []
    assert mixed.builder_flags == ["FP16", "INT8"]  # unquantized layers may run in fp16
    assert any("the others in fp16 or fp32" in n for n in mixed.notes)
    strict = builder_settings(
        TensorRTOptions(int8_unquantized="fp32"), "int8", mlp_contract(), qdq_mlp()
    )
    assert strict.network_flags == ["STRONGLY_TYPED"]
    assert strict.builder_flags == [] and strict.cleared_flags == []  # no precision flags
    assert any("layers without Q/DQ run in fp32" in n for n in strict.notes)
    weak32 = builder_settings(
        TensorRTOptions(strongly_typed=False, int8_unquantized="fp32"), "int8", mlp_contract(),
        qdq_mlp(),
    )  # fmt: skip
    assert weak32.network_flags == [] and weak32.builder_flags == ["INT8"]
    assert mixed.digest() != strict.digest() != weak32.digest()


def test_settings_digest_tracks_content_not_notes() -> None:
    a = builder_settings(TensorRTOptions(), "fp16", mlp_contract(), tiny_mlp())
    b = builder_settings(TensorRTOptions(), "fp16", mlp_contract(), tiny_mlp())
    assert a.digest() == b.digest()
    assert a.model_copy(update={"notes": ["x"]}).digest() == a.digest()
    fp32 = builder_settings(TensorRTOptions(), "fp32", mlp_contract(), tiny_mlp())
    assert fp32.digest() != a.digest()


def test_build_gpu_limits() -> None:
    s = builder_settings(
        TensorRTOptions(hardware_compatibility="ampere_plus"), "bf16", mlp_contract(), tiny_mlp()
    )
    why = check_build_gpu(s, T4)
    assert any("ampere_plus" in w for w in why) and any("bf16" in w for w in why)
    assert check_build_gpu(s, A10) == []


# ---------------------------------------- the builder's precision: options float, pass int8


@pytest.mark.parametrize(
    ("variant", "option", "flags"),
    [
        ("fp32", "fp32", []),
        ("fp16", "fp16", ["FP16"]),
        ("bf16", "bf16", ["BF16"]),
        ("fp16", "fp32", []),  # an fp16 pass's model: its tensors say fp16, no builder flag
    ],
)
def test_float_precision_comes_from_the_options(
    tmp_path: Path, variant: str, option: str, flags: list[str]
) -> None:
    result, out = build(tmp_path, variant=variant, precision=option, build="deferred")
    settings = read_spec(out / SPEC_FILE).settings
    assert settings.builder_flags == flags and settings.precision == option
    assert result.precision == variant  # the artifact is judged by the variant's precision


def test_int8_comes_from_the_variant_and_its_qdq_model(tmp_path: Path) -> None:
    _, out = build(tmp_path, qdq_mlp(), variant="int8", precision="fp16", build="deferred")
    settings = read_spec(out / SPEC_FILE).settings
    assert settings.precision == "int8" and settings.quantization == "qdq"
    assert settings.network_flags == [] and settings.builder_flags == ["FP16", "INT8"]
