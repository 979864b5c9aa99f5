"""The `parity:` config section: partial tolerances, output kinds, and the task metric (checked
when the config is read, recorded in the package's policy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.core.errors import ConfigError
from compiler.core.tolerance import DEFAULT_TOLERANCES, TaskSpec
from compiler.pipeline.config import load_config, resolve_config

INT8 = DEFAULT_TOLERANCES["int8"]


def score(outputs: object, labels: object) -> float:
    """A task metric the config can name (tests.compiler.test_parity_config:score)."""
    return 1.0


def test_a_partial_tolerance_in_a_file_keeps_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "parity:\n"
        "  tolerances: {int8: {min_top1: 0.95}}\n"
        "  outputs: {probs: {int8: {max_rel_l2: 0.1}}}\n"
        "  kinds: {probs: probabilities}\n"
    )
    cfg = load_config(path, ["cpu"])
    assert cfg.parity.tolerances["int8"].min_top1 == 0.95
    assert cfg.parity.tolerances["int8"].max_rel_l2 == INT8.max_rel_l2
    per_output = cfg.policy().parity.tolerance("int8", "probs")
    assert (per_output.min_top1, per_output.max_rel_l2) == (0.95, 0.1)  # from its precision's
    assert cfg.parity.kinds == {"probs": "probabilities"}


def test_unknown_tolerance_field_and_kind_are_named(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("parity: {tolerances: {int8: {min_top: 0.95}}}\n")
    with pytest.raises(ConfigError, match=r"parity.tolerances.int8.min_top: Unexpected keyword"):
        load_config(path, ["cpu"])
    path.write_text("parity: {kinds: {y: logits}}\n")
    with pytest.raises(ConfigError, match=r"parity.kinds.y: Input should be 'class_scores'"):
        load_config(path, ["cpu"])


def test_task_is_recorded_in_the_policy() -> None:
    raw = {"parity": {"task": {"metric": f"{__name__}:score", "max_drop": 0.01}}}
    cfg = resolve_config(raw, ["cpu"])
    assert cfg.policy().parity.task == TaskSpec(f"{__name__}:score", max_drop=0.01)
    via_set = resolve_config(None, ["cpu"], [f"parity.task.metric={__name__}:score"])
    assert via_set.policy().parity.task == TaskSpec(f"{__name__}:score")


def test_a_task_metric_that_cannot_be_imported_stops_the_build_early() -> None:
    raw = {"parity": {"task": {"metric": "no_such_metrics_module:accuracy"}}}
    with pytest.raises(ConfigError) as err:
        resolve_config(raw, ["cpu"])
    assert "parity.task" in str(err.value)
    assert "'no_such_metrics_module:accuracy': cannot import (ModuleNotFoundError" in str(err.value)
    with pytest.raises(ConfigError, match="expected module:function"):
        resolve_config({"parity": {"task": {"metric": "accuracy"}}}, ["cpu"])
