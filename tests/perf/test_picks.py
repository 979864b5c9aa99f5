"""perf/picks.py's pure parts: the batch a model's contract admits and the geomean of the
table. No timing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from compiler.core.contract import Contract, DimRange, TensorSpec
from perf.measure import tile_batch
from perf.picks_report import geomean_of, render
from perf.plan import Plan


def _contract(shape: list[int | str], dims: dict[str, DimRange]) -> Contract:
    return Contract(
        inputs=[TensorSpec(name="x", dtype="float32", shape=shape)],
        outputs=[TensorSpec(name="y", dtype="float32", shape=shape)],
        dims=dims,
    )


def test_tile_batch_repeats_rows_up_to_the_contract_range() -> None:
    feed = {"x": np.arange(6, dtype=np.float32).reshape(1, 6)}
    tiled, batch = tile_batch(_contract(["n", 6], {"n": DimRange(min=1, opt=1, max=4)}), feed, 8)
    assert batch == 4 and tiled["x"].shape == (4, 6)
    assert np.array_equal(tiled["x"][3], feed["x"][0])


def test_tile_batch_leaves_models_without_a_batch_dim_alone() -> None:
    feed = {"x": np.zeros((1, 6), dtype=np.float32)}
    assert tile_batch(_contract([1, 6], {}), feed, 8) == (feed, 1)
    fixed = _contract(["n", 6], {"n": DimRange(min=1, opt=1, max=1)})
    assert tile_batch(fixed, feed, 8)[1] == 1


def test_geomean_skips_missing_and_non_positive_values() -> None:
    assert geomean_of([]) is None
    assert math.isclose(geomean_of([2.0, 8.0]) or 0, 4.0)
    assert math.isclose(geomean_of([2.0, 8.0, 0.0, float("nan")]) or 0, 4.0)


def _entry(pick: str, built: list[tuple[str, str, float]]) -> dict:
    def speedup(v: float) -> dict:
        return {"estimate": v, "low": v * 0.95, "high": v * 1.05}

    return {
        "pick": pick,
        "precision": "int8",
        "reason": "why",
        "batches": {},
        "task": {"pick": "p", "original": "o", "as_well": True},
        "built": [
            {"id": aid, "precision": "int8", "parity": parity, "speedup": speedup(v)}
            for aid, parity, v in built
        ],
        "builds": {
            "cold": {"returncode": 0, "seconds": 40.0},
            "warm": {"returncode": 0, "seconds": 2.0},
            "same-job": {"returncode": 0, "seconds": 10.0},
        },
        "olive": {"seconds": 1.0},
    }


def _doc(models: dict, **more: object) -> dict:
    """A picks run's document around `models`, as perf/picks.py writes it."""
    return {
        "date": "2026-12-04",
        "host": {"arch": "x86_64", "cpu_model": "cpu", "cpu_count": 2, "isa": ["avx2"]},
        "load_average": [0.5],
        "targets": "cpu",
        "command": "python perf/picks.py",
        "plan": {"repeats": 2},
        "models": models,
        **more,
    }


def test_the_report_sets_the_fastest_artifact_built_beside_the_pick() -> None:
    """What accuracy costs: the fastest artifact of each cold build, passed or not, beside
    the pick, on the build records' basis; a model whose artifacts are all slower counts
    1.00x (the reference); and the same-job build against Olive with and without its
    import."""
    doc = _doc(
        {
            "a": _entry("cpu/x", [("cpu/x", "passed", 2.0), ("cpu/y", "failed", 8.0)]),
            "b": _entry("reference", [("cpu/z", "failed", 0.5)]),
        },
        olive={"import_seconds": 4.0},
    )
    md = render(doc)
    # picks: 2.0 and 1.0 (the reference) -> 1.41x; fastest: 8.0 and 1.0 -> 2.83x
    assert "the picks 1.41x, the fastest artifacts 2.83x" in md
    assert "| a | cpu/x: 2.00x | cpu/y (int8) | 8.00x [7.60-8.40] | failed |" in md
    assert "| b | reference: 1.00x | cpu/z (int8) | 0.50x [0.47-0.53] | failed |" in md
    # cold 40 s, same job 10 s, Olive's job 1 s (+ 4 s import: a run of one Olive process)
    assert "| a | 40.0 s | 2.0 s | 10.0 s | 1.0 s (5.0 s) | 40.00x | 10.00x | 2.00x | - | - |" in md
    assert "paid once" in md

    # A fresh Olive process per job: its whole wall time is Olive's, import or not.
    doc["models"]["a"]["olive"] = {"seconds": 1.0, "process_seconds": 8.0, "import_seconds": 3.5}
    doc["olive"] = {"import_seconds": 3.5, "per_process": True}
    md = render(doc)
    assert "| a | 40.0 s | 2.0 s | 10.0 s | 1.0 s (8.0 s) | 40.00x | 10.00x | 1.25x | - | - |" in md
    assert "each model's in a fresh Olive process" in md and "paid once" not in md
    # Olive's workflow with its evaluator: its process's wall time, and what its task said.
    doc["models"]["a"]["olive_eval"] = {
        "seconds": 2.5,
        "process_seconds": 12.5,
        "evaluation": {
            "input": {"task-score": 1.0, "latency-avg": 2.0},
            "output": {"task-score": 0.75, "latency-avg": 1.0},
        },
    }
    assert "| 1.25x | 12.5 s (task 0.75 vs 1) | 0.80x |" in render(doc)
    # Olive's int8 model that does not run is Olive's verdict, not a failed job
    doc["models"]["a"]["olive_eval"]["evaluation"]["output"] = {"error": "Fail: QLinearConv"}
    assert "| 12.5 s (its int8 model fails: Fail: QLinearConv) | 0.80x |" in render(doc)
    # A failed Olive job has no wall time to divide by.
    doc["models"]["a"]["olive"] = {"seconds": 0.0, "process_seconds": 2.0, "error": "boom"}
    doc["models"]["a"]["olive_eval"] = {"seconds": 0.0, "error": "bang"}
    assert "| a | 40.0 s | 2.0 s | 10.0 s | boom | - | - | - | bang | - |" in render(doc)


def test_the_report_says_where_the_same_jobs_time_went() -> None:
    """Each node kind's seconds of the same job from its manifest, and the wall time outside
    them; a run without node seconds (before 2026-12-05) or that failed has no row."""
    doc = _doc({"a": _entry("cpu/x", []), "b": _entry("cpu/x", []), "c": _entry("cpu/x", [])})
    doc["models"]["a"]["builds"]["same-job"]["node_seconds"] = {
        "normalize": 0.5,
        "data": 0.25,
        "reference": 0.25,
        "simplify#ee3974f2": 1.0,
        "cpu:quantize#60fbcd7f": 4.0,
        "cpu/ort-int8:compile": 0.125,
        "cpu/ort-int8:verify": 2.0,
    }
    doc["models"]["c"]["builds"]["same-job"] = {"returncode": 1, "seconds": 3.0}
    md = render(doc)
    assert "## Where the same job's time went" in md
    # wall 10 s, nodes 8.125 s: 1.875 s outside them
    assert "| a | 10.0 | 0.50 | 0.25 | 0.25 | 1.00 | 4.00 | 0.12 | 2.00 | 0.00 | 1.88 |" in md
    assert "| b | 10.0 |" not in md and "| c | 3.0 |" not in md
    del doc["models"]["a"]["builds"]["same-job"]["node_seconds"]
    assert "## Where the same job's time went" not in render(doc)


def test_a_build_run_reads_its_nodes_seconds_from_the_manifest(tmp_path: Path) -> None:
    from perf.builds import node_counts, node_seconds

    nodes = [
        {"node": "normalize", "status": "ran", "seconds": 0.5},
        {"node": "simplify#1", "status": "cached", "seconds": 0.0},
        {"node": "cpu:quantize#2", "status": "ran", "seconds": 3.25},
    ]
    (tmp_path / "manifest.json").write_text(json.dumps({"build": {"nodes": nodes}}))
    assert node_seconds(tmp_path) == {"normalize": 0.5, "cpu:quantize#2": 3.25}
    assert node_counts(tmp_path) == ({"cached": 1, "ran": 2}, ["normalize", "cpu:quantize#2"])


def _lat(ref_ms: float, speedup: float, other: float = 0.0) -> dict:
    return {
        "cpu/ov-bf16": {"speedup": {"estimate": speedup}},
        "reference": {"pooled": {"p50_ms": ref_ms}},
        "other_work": {"cpus": other, "of": 2},
    }


def test_a_timing_is_unsteady_by_other_work_or_a_drifted_reference_never_by_the_pick() -> None:
    from perf.picks import _unsteady

    assert _unsteady(_lat(0.50, 1.8), 0.50) == ""
    assert _unsteady(_lat(0.50, 9.9), 0.50) == ""  # the pick's time is not read
    assert _unsteady(_lat(1.08, 4.0), 0.50) == "the reference ran 1.08 ms against 0.5 ms at build"
    assert _unsteady(_lat(0.30, 1.1), 0.50).startswith("the reference ran 0.3 ms")
    assert _unsteady(_lat(0.55, 1.8, other=0.8), 0.50) == "other work kept 0.8 of 2 cpus busy"
    assert _unsteady(_lat(1.08, 4.0), None) == ""  # batch 8: no build time to compare with


def test_an_unsteady_timing_is_timed_again_and_the_steady_attempt_kept(monkeypatch) -> None:
    import perf.picks as picks

    def replay(*results: dict):
        it = iter(results)
        monkeypatch.setattr(picks, "_timed", lambda *a, **k: next(it))

    replay(_lat(1.08, 4.04), _lat(0.50, 1.82))  # ppocr_cls in one full run, then alone
    lat, st = picks._steady_timing("m", Path("pkg"), "cpu/ov-bf16", {}, 1, Plan(quick=True), 0.50)
    assert lat["cpu/ov-bf16"]["speedup"]["estimate"] == 1.82 and st["unsteady"] == ""
    (first,) = st["other_attempts"]
    assert first["speedup"]["estimate"] == 4.04 and first["unsteady"].startswith("the reference")

    replay(_lat(0.50, 1.8))  # steady: timed once
    lat, st = picks._steady_timing("m", Path("pkg"), "cpu/ov-bf16", {}, 1, Plan(quick=True), 0.50)
    assert st["other_attempts"] == [] and st["unsteady"] == ""

    replay(_lat(1.50, 5.0), _lat(0.90, 2.5))  # neither steady: the faster reference
    lat, st = picks._steady_timing("m", Path("pkg"), "cpu/ov-bf16", {}, 1, Plan(quick=True), 0.50)
    assert lat["cpu/ov-bf16"]["speedup"]["estimate"] == 2.5 and st["unsteady"]

    replay(_lat(0.36, 2.8), _lat(0.35, 2.8))  # both agree, the build's time (0.50) was odd
    lat, st = picks._steady_timing("m", Path("pkg"), "cpu/ov-bf16", {}, 1, Plan(quick=True), 0.50)
    assert st["unsteady"] == "" and st["reference_p50_ms"] == 0.35
    assert st["other_attempts"][0]["unsteady"].startswith("the reference ran 0.36 ms")

    replay(_lat(0.50, 1.8, other=1.0), _lat(0.60, 1.7))  # other work outranks a faster one
    lat, st = picks._steady_timing("m", Path("pkg"), "cpu/ov-bf16", {}, 1, Plan(quick=True), 0.50)
    assert lat["cpu/ov-bf16"]["speedup"]["estimate"] == 1.7 and st["unsteady"] == ""


def _timed_entry(speedup: float, unsteady: str) -> dict:
    e = _entry("cpu/x", [("cpu/x", "passed", speedup)])
    sp = {"estimate": speedup, "low": speedup * 0.95, "high": speedup * 1.05, "pairs": 9}
    e["batches"] = {
        "1": {
            "pick": {"speedup": sp},
            "control": {"speedup": {"estimate": 1.0, "low": 0.99, "high": 1.01, "pairs": 9}},
            "steadiness": {
                "other_work": {"cpus": 0.0, "of": 2},
                "reference_p50_ms": 1.1,
                "reference_p50_ms_at_build": 0.5 if unsteady else 1.1,
                "unsteady": unsteady,
                "other_attempts": [],
            },
        }
    }
    return e


def test_the_report_marks_unsteady_timings_and_gives_the_geomean_of_the_steady_ones() -> None:
    doc = _doc(
        {
            "calm": _timed_entry(2.0, ""),
            "also": _timed_entry(8.0, ""),
            "noisy": _timed_entry(4.0, "the reference ran 1.1 ms against 0.5 ms at build"),
        }
    )
    md = render(doc)
    assert "over 3 models: 4.00x**" in md  # all three, as measured
    assert "**Unsteady** at batch 1 (noisy: " in md and "over the 2 steady ones: 4.00x." in md
    (noisy,) = [ln for ln in md.splitlines() if ln.startswith("| noisy | cpu/x (int8)")]
    assert "**unsteady**" in noisy
    assert "| noisy | b1 | 0 of 2 | 1.1 | 0.5 | the reference ran 1.1 ms" in md
