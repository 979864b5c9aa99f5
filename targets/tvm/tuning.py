"""Optional MetaSchedule tuning under a budget, with the database cached per model and target.

The database lives in `<cache_dir>/tuning/<key>/` where the key hashes the model digest,
the TVM target, the static input shapes, the budget and the TVM version; a database found
there is reused, so tuning never repeats for the same model and target. Tuning runs in its
own process group: when the seconds budget runs out the group is killed and the records
measured so far (MetaSchedule appends them as it goes) are what the build applies.
Only the `cpu` target is tuned here: measuring needs the target device.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from compiler.core.errors import BuildError
from targets.tvm.frontend import import_onnx

__all__ = ["tuning_database", "tuning_key"]

_MARKER = "tuning.json"


def cost_model() -> str:
    """MetaSchedule's cost model: XGBoost's where it is installed (`pip install
    'compile-pkg[tvm-tuning]'`), else random search, which the note says."""
    return "xgb" if importlib.util.find_spec("xgboost") is not None else "random"


def tuning_key(req: dict[str, Any], target_json: dict[str, Any]) -> str:
    import tvm

    shapes = {s["name"]: s["shape"] for s in req["inputs"]}
    blob = json.dumps(
        {
            "model": req["model_digest"],
            "target": target_json,
            "shapes": shapes,
            "dims": req["dims"],
            "precision": req["precision"],
            "trials": req["options"]["tuning_trials"],
            "seconds": req["options"]["tuning_seconds"],
            "tvm": tvm.__version__,
            "cost_model": cost_model(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def tuning_database(
    req: dict[str, Any], target_json: dict[str, Any], cache_dir: Path
) -> tuple[Path | None, str]:
    """Return the database folder to apply (tuning first if needed) and a note for the record."""
    if req["target"] != "cpu":
        return None, f"tuning skipped: MetaSchedule measures on the device, no {req['target']} here"
    key = tuning_key(req, target_json)
    folder = cache_dir / "tuning" / key
    marker = folder / _MARKER
    if marker.is_file():
        info = json.loads(marker.read_text())
        return folder, f"tuning database reused ({key}, {_records(info)})"
    folder.mkdir(parents=True, exist_ok=True)
    request = folder / "request.json"
    model = cost_model()
    request.write_text(
        json.dumps({**req, "tuning_target": target_json, "cost_model": model}, sort_keys=True)
    )
    seconds = req["options"]["tuning_seconds"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "targets.tvm.tuning", str(request), str(folder)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "tuning.log", "w"),  # noqa: SIM115 - closed with the process
    )
    cut_short = False
    try:
        rc = proc.wait(timeout=seconds if seconds > 0 else None)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc, cut_short = 0, True
    if rc != 0:
        tail = (folder / "tuning.log").read_text(errors="replace")[-400:]
        raise BuildError(f"tvm tuning failed (exit {rc}); log in {folder}: {tail}")
    records, measured = _count_records(folder / "database_tuning_record.json")
    info = {
        "records": records,
        "measured": measured,
        "elapsed_s": round(time.perf_counter() - t0, 1),
        "cut_short_by_seconds_budget": cut_short,
        "cost_model": model,
    }
    marker.write_text(json.dumps(info, sort_keys=True))
    how = "stopped by the seconds budget" if cut_short else "finished"
    return folder, f"tuned ({key}, {_records(info)}, {how} after {info['elapsed_s']} s)"


def _records(info: dict[str, Any]) -> str:
    """The note's count: records, and how many of them built and ran (a trial whose build or
    run failed is a record too, with MetaSchedule's failure time: it tunes nothing)."""
    said = f"{info['records']} records, {info.get('measured', '?')} measured"
    if info.get("measured") == 0 and info["records"]:
        said += " (no trial built and ran: TVM's default schedules apply; see logs/)"
    if info.get("cost_model") == "random":
        said += ", random search (no xgboost: pip install 'compile-pkg[tvm-tuning]')"
    return said


# MetaSchedule writes a trial that failed to build or run with this run time (1e10 s)
_FAILED_RUN_SECS = 1e9


def _count_records(path: Path) -> tuple[int, int]:
    """(records, measured): every line of MetaSchedule's JSON database, and those whose run
    times are real measurements."""
    if not path.is_file():
        return 0, 0
    records = measured = 0
    for line in path.open():
        records += 1
        run_secs = json.loads(line)[1][1]  # [workload, [trace, run_secs, target, args]]
        measured += bool(run_secs) and max(float(t) for t in run_secs) < _FAILED_RUN_SECS
    return records, measured


def _intrinsics() -> None:
    """Import TVM's tensor intrinsics, fast. MetaSchedule imports them in the tuning process
    and inside every build; the import parses some 500 TVMScript functions, and TVM 0.27's
    parser calls `inspect.stack()` for each, which looks up every frame's module. A frame of
    a frozen module (`<frozen importlib._bootstrap>`, `<frozen runpy>`: an import, `python
    -m`) is in no cache, so each lookup scans all of `sys.modules` (~2000 here): 39 s for
    the import on 2 cores, 6 s with those frames' modules cached first (2026-12-03). Inside
    a build it ran into the builder's 30 s timeout: every trial failed to build and
    "tuned" databases tuned nothing. Self-contained: it is the builder workers' initializer
    too, pickled by value (a worker imports nothing of ours), and runs before their first
    build, outside its timeout."""
    import inspect

    for name in ("importlib._bootstrap", "importlib._bootstrap_external", "runpy"):
        inspect.modulesbyfile.setdefault(f"<frozen {name}>", name)
    import tvm.s_tir.tensor_intrin  # noqa: F401


def _tune(request: Path, folder: Path) -> None:
    import onnx
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    _intrinsics()  # this process is `python -m`: a worker unpickles it by value
    req = json.loads(request.read_text())
    target = tvm.target.Target(req["tuning_target"])
    mod = import_onnx(onnx.load(req["model"]), req, dynamic=False)
    with target:
        mod = relax.transform.DecomposeOpsForInference()(mod)
        mod = relax.get_pipeline("zero")(mod)
    # what relax.transform.MetaScheduleTuneIRMod runs, with builder workers that import the
    # intrinsics first
    ms.relax_integration.tune_relax(
        mod,
        params={},
        target=target,
        work_dir=str(folder),
        max_trials_global=req["options"]["tuning_trials"],
        builder=ms.builder.LocalBuilder(initializer=_intrinsics),
        cost_model=req["cost_model"],
    )


if __name__ == "__main__":
    _tune(Path(sys.argv[1]), Path(sys.argv[2]))
