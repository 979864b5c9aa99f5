"""The peer: the same model through Microsoft Olive, in its own process (run by perf/run.py).

Two Olive workflows, the closest equivalents of what compile-pkg's cpu target builds:
`ort-int8` (OnnxStaticQuantization: ONNX Runtime static QDQ int8, u8 activations, s8
per-channel weights, MinMax calibration on the same calibration feeds) and `ov-int8`
(OpenVINOConversion then OpenVINOQuantization: NNCF post-training int8, as compile-pkg's
ov-int8). Usage:

    python perf/olive_peer.py JOBS.json RESULTS.json

JOBS.json lists {id, workflow, model, calibration, out}; every job runs in this one process
(Olive's import, 3-12 s, is reported apart as `import_seconds`). The benchmarks pass one job
per process (perf/builds.py `run_olive`), so each job's process is Olive's wall time for it.
RESULTS.json gets, per job, the artifact path (or the error), the workflow's wall time and
its peak RSS. Telemetry is switched off (OLIVE_DISABLE_TELEMETRY=1, CI=1).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
os.environ.setdefault("CI", "1")

__all__ = ["WORKFLOWS", "main", "run_job", "workflow_config"]

WORKFLOWS = ("ort-int8", "ov-int8")
_DATASET = "compile_pkg_perf_npz"


def _register_dataset() -> None:
    """Olive reads calibration data through registered components: one for a folder of .npz
    feeds (what compile-pkg's --calibration-data takes), each item already a batch."""
    import numpy as np
    from olive.data.registry import Registry

    class NpzFeeds:
        def __init__(self, folder: str) -> None:
            self.files = sorted(Path(folder).glob("*.npz"))

        def __len__(self) -> int:
            return len(self.files)

        def __getitem__(self, i: int) -> tuple[dict[str, Any], int]:
            import torch

            with np.load(self.files[i]) as z:
                return {k: torch.from_numpy(z[k]) for k in z.files}, 0

    @Registry.register_dataset(_DATASET)
    def _dataset(data_dir: str, **kwargs: Any) -> NpzFeeds:  # noqa: ARG001
        return NpzFeeds(data_dir)


def workflow_config(workflow: str, model: Path, calibration: Path, out: Path) -> dict[str, Any]:
    data = {
        "name": "calibration",
        "type": "DataContainer",
        "load_dataset_config": {"type": _DATASET, "params": {"data_dir": str(calibration)}},
        "dataloader_config": {"type": "no_auto_batch_dataloader"},
    }
    if workflow == "ort-int8":
        passes: dict[str, Any] = {
            "quantize": {
                "type": "OnnxStaticQuantization",
                "data_config": "calibration",
                "quant_format": "QDQ",
                "activation_type": "uint8",
                "precision": "int8",  # weights
                "per_channel": True,
                "calibrate_method": "MinMax",
                "quant_preprocess": False,
            }
        }
        providers = ["CPUExecutionProvider"]
    elif workflow == "ov-int8":
        passes = {
            "convert": {"type": "OpenVINOConversion"},
            "quantize": {
                "type": "OpenVINOQuantization",
                "data_config": "calibration",
                "target_device": "cpu",
            },
        }
        providers = ["OpenVINOExecutionProvider"]
    else:
        raise ValueError(f"unknown workflow {workflow!r}; known: {WORKFLOWS}")
    return {
        "input_model": {"type": "ONNXModel", "model_path": str(model)},
        "systems": {
            "local": {
                "type": "LocalSystem",
                "accelerators": [{"device": "cpu", "execution_providers": providers}],
            }
        },
        "data_configs": [data],
        "passes": passes,
        "host": "local",
        "target": "local",
        "cache_dir": str(out / "cache"),
        "output_dir": str(out / "output"),
        "log_severity_level": 3,
        "evaluate_input_model": False,
    }


def _find_artifact(out: Path, workflow: str) -> Path:
    pattern = "*.xml" if workflow == "ov-int8" else "*.onnx"
    found = sorted((out / "output").rglob(pattern))
    if not found:
        raise FileNotFoundError(f"Olive wrote no {pattern} under {out / 'output'}")
    return found[0]


class _PeakRss:
    """Peak resident memory of this process, sampled every 20 ms while a workflow runs
    (one Olive process runs every job, so getrusage's lifetime maximum cannot split them)."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(0.02)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    from olive.workflows import run as olive_run

    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"id": job["id"], "workflow": job["workflow"]}
    start = time.perf_counter()
    with _PeakRss() as rss:
        try:
            olive_run(
                workflow_config(job["workflow"], Path(job["model"]), Path(job["calibration"]), out)
            )
            result["artifact"] = str(_find_artifact(out, job["workflow"]))
            result["format"] = "openvino-ir" if job["workflow"] == "ov-int8" else "onnx"
        except Exception as exc:  # recorded as the peer's failure, with its reason
            result["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:600]}"
            result["traceback"] = traceback.format_exc(limit=6)
    result["seconds"] = round(time.perf_counter() - start, 3)
    result["peak_rss_mib"] = round(rss.peak / 2**20, 1)
    return result


def main(argv: list[str]) -> int:
    """argv: JOBS.json (a list of {id, workflow, model, calibration, out}), RESULTS.json."""
    jobs = json.loads(Path(argv[0]).read_text())
    results_path = Path(argv[1])
    start = time.perf_counter()
    import olive

    _register_dataset()
    doc: dict[str, Any] = {
        "olive_version": olive.__version__,
        "import_seconds": round(time.perf_counter() - start, 3),
        "jobs": [],
    }
    for job in jobs:
        doc["jobs"].append(run_job(job))
        results_path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
