from __future__ import annotations

from pathlib import Path

import pytest

from compiler.core.errors import ConfigError
from compiler.pipeline.config import load_config, resolve_config


def test_defaults_expand_the_pipeline_per_target() -> None:
    cfg = resolve_config(None, ["cpu", "arm"])
    assert set(cfg.targets) == {"cpu", "arm"}
    assert "ort-fp32" in cfg.targets["cpu"].variants
    assert cfg.targets["cpu"].variants["ort-fp32"].compile.backend == "onnxruntime"


def test_set_reaches_a_pass_in_every_variant_of_a_target() -> None:
    cfg = resolve_config(None, ["cpu", "arm"], ["cpu.fuse.level=extended"])
    cpu_levels = {
        p.level for v in cfg.targets["cpu"].variants.values() for p in v.passes if p.name == "fuse"
    }
    arm_levels = {
        p.level for v in cfg.targets["arm"].variants.values() for p in v.passes if p.name == "fuse"
    }
    assert cpu_levels == {"extended"} and arm_levels == {"basic"}


def test_set_plain_path_and_typed_values() -> None:
    cfg = resolve_config(None, ["cpu"], ["latency.runs=7", "dims.batch={min: 1, opt: 2, max: 4}"])
    assert cfg.latency.runs == 7 and cfg.dims["batch"].opt == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["latency.runs"], r"expected KEY=VALUE"),
        (["cpu.nosuchpass.x=1"], r"--set cpu.nosuchpass.x: no such setting"),
        (["latency.runs=0"], r"latency.runs: Input should be greater than or equal to 1"),
        (["cpu.fuse.level=all"], r"level: Input should be 'basic' or 'extended'"),
    ],
)
def test_override_errors_are_clear(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(None, ["cpu"], overrides)


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
        ConfigError, match=r"invalid config .*bad.yaml:\n  latency.runz: Extra inputs"
    ):
        load_config(bad, ["cpu"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("latency: [\n")
    with pytest.raises(ConfigError, match="broken.yaml is not valid yaml"):
        load_config(broken, ["cpu"])
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml", ["cpu"])


def test_unknown_pipeline_and_target() -> None:
    with pytest.raises(ConfigError, match="no pipeline named 'turbo'"):
        resolve_config({"targets": {"cpu": {"pipeline": "turbo"}}}, ["cpu"])
    with pytest.raises(ConfigError, match=r"unknown targets \['tpu'\]"):
        resolve_config(None, ["tpu"])


def test_variants_in_the_file_replace_the_pipeline() -> None:
    raw = {
        "targets": {
            "cpu": {
                "variants": {
                    "mine": {
                        "compile": {"backend": "onnxruntime", "graph_optimization_level": "basic"}
                    }
                }
            }
        }
    }
    cfg = resolve_config(raw, ["cpu"])
    assert list(cfg.targets["cpu"].variants) == ["mine"]
    assert cfg.targets["cpu"].variants["mine"].compile.graph_optimization_level == "basic"
