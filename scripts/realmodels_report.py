"""Build every real model with the default command and say whether the packages hold up.

    python scripts/fetch_models.py                       # once: the models' cache
    python scripts/realmodels_report.py -o build/realmodels
    python scripts/realmodels_report.py -o build/rm --models ppocr_det,silero_vad --targets cpu

For each model of scripts/realdata/catalog.py, two builds with the default command:

1. `compile-pkg MODEL --targets T -o OUT/<id>/generated` (no data): does it package, and is any
   lossy artifact `passed` on generated data (it must not be: issue 12)?
2. `compile-pkg MODEL --targets T -o OUT/<id>/real --calibration-data C --sample-data S
   --set parity.task.metric=scripts.realdata.metrics:<id> --set parity.task.max_drop=0`, with
   labelled data from scripts/make_data.py, as a user with labelled data would: verify scores
   the model's task on the parity samples for the reference and every artifact, and fails an
   artifact whose score drops at all. The package is loaded as serving loads it
   (`compiler.serving.loader.load`); its pick and the original model on ONNX Runtime run the
   model's held-out task set, scored by the same metric. The pick must do it as well.

Prints one markdown table (packaged, pick, its same-run speedup with interval from the
manifest's build latency record, task score of the pick and of the original on the held-out
set and on the parity samples, the artifacts the task metric failed), then every failure and,
for each int8 artifact the task failed, what its accuracy loop did; writes OUT/report.json.
Exit 1 if any model fails a check. Slow: minutes per model with the gpu target's TVM CUDA
compiles.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compiler.serving.loader import load  # noqa: E402
from compiler.serving.manifest import Manifest, read_manifest  # noqa: E402
from scripts.make_data import write_model_data  # noqa: E402
from scripts.realdata.catalog import MODELS  # noqa: E402
from scripts.realdata.packages import (  # noqa: E402
    LOSSY,
    build_command,
    describe_task,
    int8_loop,
    run_build,
    speedup,
    verdicts,
)
from scripts.realdata.task import RealModel, ort_runner  # noqa: E402

__all__ = ["ModelReport", "build", "report_model"]


@dataclass
class ModelReport:
    model: str
    source: str
    task: str
    metric: str = ""
    packaged_generated: str = "-"  # "yes" or the error line
    lossy_passed_on_generated: list[str] = field(default_factory=list)
    packaged_real: str = "-"
    artifacts: dict[str, str] = field(default_factory=dict)  # id -> status/parity, task
    task_failed: list[str] = field(default_factory=list)  # "id: score (reference ...)"
    int8_loops: list[str] = field(default_factory=list)  # task-failed int8: its accuracy loop
    pick: str = "-"
    pick_reason: str = ""
    speedup: str = "-"
    pick_task_recorded: str = "-"  # the pick's task score on the parity samples
    original_task: str = "-"  # held-out task set, original model on ONNX Runtime
    pick_task: str = "-"  # held-out task set, serving's pick
    task_ok: bool | None = None
    failures: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures


def build(
    model: RealModel,
    out: Path,
    targets: str,
    cache: Path,
    data: tuple[Path, Path] | None,
    extra: list[str],
) -> tuple[str, float]:
    """Run the default command (with `data`: labelled data and the task metric);
    ("yes", seconds) or (the error line, seconds)."""
    start = time.perf_counter()
    cmd = build_command(model, out, targets, cache, data, extra)
    done = run_build(cmd, out.parent / f"{out.name}.log")
    seconds = time.perf_counter() - start
    if done.returncode == 0 and (out / "manifest.json").is_file():
        return "yes", seconds
    lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
    error = next(
        (ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else ""
    )
    return f"no (exit {done.returncode}): {error[:300]}", seconds


def _line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def _generated_passes(manifest: Manifest) -> list[str]:
    """Lossy artifacts whose parity `passed` although samples or calibration were generated."""
    ref = manifest.reference
    if "generated" not in (ref.samples_source, ref.calibration_source):
        return []
    return [v.id for v in verdicts(manifest) if v.precision in LOSSY and v.parity == "passed"]


def _no_data_build(
    model: RealModel, out: Path, targets: str, cache: Path, extra: list[str], r: ModelReport
) -> None:
    r.packaged_generated, r.seconds["build_generated"] = build(
        model, out / "generated", targets, cache, None, extra
    )
    if r.packaged_generated != "yes":
        r.failures.append(f"default build (no data): {r.packaged_generated}")
        return
    try:
        r.lossy_passed_on_generated = _generated_passes(read_manifest(out / "generated"))
    except Exception as exc:  # a finding in another area: record it, go on
        r.failures.append(f"reading the package (no data): {_line(exc)}")
    if r.lossy_passed_on_generated:
        r.failures.append(
            f"lossy artifacts passed on generated data: {r.lossy_passed_on_generated}"
        )


def _record_verdicts(manifest: Manifest, r: ModelReport) -> None:
    for v in verdicts(manifest):
        r.artifacts[v.id] = v.describe()
        if v.parity in ("passed", "failed") and (v.task is None or v.task.status == "not-run"):
            r.failures.append(f"task not scored for {v.id}: {describe_task(v.task)}")
        if v.task_failed:
            r.task_failed.append(f"{v.id}: {describe_task(v.task)}")
            if v.precision == "int8":
                r.int8_loops.append(f"{v.id}: {int8_loop(manifest, v.id)}")


def report_model(
    model: RealModel,
    out: Path,
    targets: str,
    cache: Path,
    extra: list[str],
    with_generated: bool = True,
) -> ModelReport:
    r = ModelReport(model.id, model.source, model.task, model.metric)
    out.mkdir(parents=True, exist_ok=True)
    if with_generated:
        _no_data_build(model, out, targets, cache, extra, r)
    data = out / "data"
    for split in ("calibration", "sample"):
        write_model_data(model.id, data / split, split, replace=True)
    r.packaged_real, r.seconds["build_real"] = build(
        model, out / "real", targets, cache, (data / "calibration", data / "sample"), extra
    )
    if r.packaged_real != "yes":
        r.failures.append(f"build with real data: {r.packaged_real}")
        return r
    try:
        manifest = read_manifest(out / "real")
    except Exception as exc:
        r.failures.append(f"reading the package (real data): {_line(exc)}")
        return r
    _record_verdicts(manifest, r)
    start = time.perf_counter()
    original = model.check(ort_runner(model.path))
    r.original_task = original.summary
    try:
        with load(out / "real") as session:
            r.pick, r.pick_reason = session.artifact, session.reason
            picked = model.check(session.run)
    except Exception as exc:  # a finding: report it, go on with the next model
        r.failures.append(f"serving: {_line(exc)}")
        return r
    r.seconds["task_checks"] = time.perf_counter() - start
    r.pick_task = picked.summary
    r.speedup = speedup(manifest, r.pick)
    pick = next(v for v in verdicts(manifest) if v.id == r.pick)
    r.pick_task_recorded = describe_task(pick.task)
    r.task_ok = picked.as_well_as(original)
    if not r.task_ok:
        r.failures.append(f"task: {r.pick} {picked.summary}; original {original.summary}")
    return r


def table(reports: list[ModelReport]) -> str:
    head = (
        "| model | packaged (no data / real data) | lossy passed on generated | serving picks "
        "| speedup [interval] | held-out task: pick | held-out task: original | as well "
        "| task on parity samples: pick | failed by the task metric |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in reports:
        packaged = f"{r.packaged_generated[:3]} / {r.packaged_real[:3]}"
        flagged = ", ".join(r.lossy_passed_on_generated) or "none"
        well = {True: "yes", False: "**no**", None: "-"}[r.task_ok]
        failed = "; ".join(r.task_failed) or "none"
        rows.append(
            f"| {r.model} | {packaged} | {flagged} | {r.pick} | {r.speedup} | {r.pick_task} "
            f"| {r.original_task} | {well} | {r.pick_task_recorded} | {failed} |"
        )
    return head + "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("-o", "--out", type=Path, required=True, help="folder for packages, data, logs")
    ap.add_argument("--models", help=f"comma-separated subset of {','.join(MODELS)}")
    ap.add_argument("--targets", default="gpu,cpu,arm", help="as compile-pkg takes them")
    ap.add_argument(
        "--cache-dir",
        type=Path,
        help="compile-pkg's node cache (default: OUT/cache); reuse one "
        "to skip compiles an earlier run made",
    )
    ap.add_argument(
        "--no-generated",
        action="store_true",
        help="skip the build without data (only the labelled build and the task checks)",
    )
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to both builds, e.g. latency.max_seconds=2",
    )
    args = ap.parse_args()
    ids = args.models.split(",") if args.models else list(MODELS)
    unknown = sorted(set(ids) - set(MODELS))
    if unknown:
        ap.error(f"unknown models {unknown}; have {sorted(MODELS)}")
    extra = [x for kv in args.overrides for x in ("--set", kv)]
    reports: list[ModelReport] = []
    for model_id in ids:
        model = MODELS[model_id]
        why = model.missing()
        if why:
            r = ModelReport(model_id, model.source, model.task, failures=[f"not run: {why}"])
        else:
            print(f"[{time.strftime('%H:%M:%S')}] {model_id} ...", file=sys.stderr, flush=True)
            cache = args.cache_dir or args.out / "cache"
            r = report_model(
                model, args.out / model_id, args.targets, cache, extra, not args.no_generated
            )
        reports.append(r)
        (args.out / "report.json").write_text(
            json.dumps([asdict(x) for x in reports], indent=1) + "\n"
        )
    print(table(reports))
    for r in reports:
        for f in r.failures:
            print(f"- {r.model}: {f}")
    for r in reports:
        for loop in r.int8_loops:
            print(f"- {r.model}: failed by the task metric, {loop}")
    sys.exit(0 if all(r.ok for r in reports) else 1)


if __name__ == "__main__":
    main()
