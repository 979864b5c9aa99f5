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
        return folder, f"tuning database reused ({key}, {info['records']} records)"
    folder.mkdir(parents=True, exist_ok=True)
    request = folder / "request.json"
    request.write_text(json.dumps({**req, "tuning_target": target_json}, sort_keys=True))
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
    records = _count_lines(folder / "database_tuning_record.json")
    info = {
        "records": records,
        "elapsed_s": round(time.perf_counter() - t0, 1),
        "cut_short_by_seconds_budget": cut_short,
    }
    marker.write_text(json.dumps(info, sort_keys=True))
    how = "stopped by the seconds budget" if cut_short else "finished"
    return folder, f"tuned ({key}, {records} records, {how} after {info['elapsed_s']} s)"


def _count_lines(path: Path) -> int:
    return sum(1 for _ in path.open()) if path.is_file() else 0


def _tune(request: Path, folder: Path) -> None:
    import onnx
    import tvm
    from tvm import relax

    req = json.loads(request.read_text())
    target = tvm.target.Target(req["tuning_target"])
    mod = import_onnx(onnx.load(req["model"]), req, dynamic=False)
    with target:
        mod = relax.transform.DecomposeOpsForInference()(mod)
        mod = relax.get_pipeline("zero")(mod)
        relax.transform.MetaScheduleTuneIRMod(
            params={}, work_dir=str(folder), max_trials_global=req["options"]["tuning_trials"]
        )(mod)


if __name__ == "__main__":
    _tune(Path(sys.argv[1]), Path(sys.argv[2]))
