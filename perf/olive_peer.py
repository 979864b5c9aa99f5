"""The peer: the same model through Microsoft Olive, in its own process (run by perf/run.py).

Three Olive workflows, the closest equivalents of what compile-pkg's cpu target builds:
`ort-int8` (OnnxStaticQuantization: ONNX Runtime static QDQ int8, u8 activations, s8
per-channel weights, MinMax calibration on the same calibration feeds), `ort-int8-eval`
(the same pass with Olive's evaluator on the input model and on the result: the task metric
on the labelled samples, perf/olive_task.py, and Olive's latency metric on the first of them;
what compile-pkg's verdict measures, so a build with its verdict is set against Olive doing
that much) and `ov-int8` (OpenVINOConversion then OpenVINOQuantization: NNCF post-training
int8, as compile-pkg's ov-int8). Usage:

    python perf/olive_peer.py JOBS.json RESULTS.json

JOBS.json lists {id, workflow, model, calibration, out} (`ort-int8-eval` also `samples`,
the labelled folder, and `metric`, `module:function`); every job runs in this one process
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

WORKFLOWS = ("ort-int8", "ort-int8-eval", "ov-int8")
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


def _npz_data(name: str, folder: Path) -> dict[str, Any]:
    return {
        "name": name,
        "type": "DataContainer",
        "load_dataset_config": {"type": _DATASET, "params": {"data_dir": str(folder)}},
        "dataloader_config": {"type": "no_auto_batch_dataloader"},
    }


def _metrics(samples: Path, metric: str) -> list[dict[str, Any]]:
    """Olive's verdict on a model: the task metric over the labelled samples (higher is
    better) and the latency of the first sample (Olive's defaults: 10 warm-up runs, 20
    timed)."""
    return [
        {
            "name": "task",
            "type": "custom",
            "sub_types": [{"name": "score", "priority": 1, "higher_is_better": True}],
            "user_config": {
                "user_script": str(Path(__file__).with_name("olive_task.py")),
                "evaluate_func": "evaluate",
                "evaluate_func_kwargs": {"metric": metric, "samples": str(samples)},
            },
        },
        {
            "name": "latency",
            "type": "latency",
            "data_config": _npz_data("samples", samples),
            "sub_types": [{"name": "avg", "priority": 2}],
        },
    ]


def evaluate(model: Path, samples: Path, metric: str) -> dict[str, float]:
    """Olive's evaluator (OnnxEvaluator, the CPU provider) on one ONNX model: {"task-score",
    "latency-avg" (ms)}. Called on the input model and on the workflow's result, as a run
    config's `evaluator` with `evaluate_input_model` would; that route cannot run a custom
    metric in Olive 0.13 (its config serialiser calls `model_dump` on the custom metric's
    backend, which it set to None)."""
    from olive.evaluator.metric import Metric
    from olive.evaluator.olive_evaluator import OnnxEvaluator
    from olive.hardware import Device
    from olive.model import ONNXModelHandler

    metrics = [Metric(**m) for m in _metrics(samples, metric)]
    handler = ONNXModelHandler(model_path=str(model))
    result = OnnxEvaluator().evaluate(handler, metrics, Device.CPU, ["CPUExecutionProvider"])
    return {key: float(value.value) for key, value in result.items()}


def _evaluated(model: Path, samples: Path, metric: str) -> dict[str, Any]:
    """`evaluate` on Olive's result, or {"error"} where that model does not load or run:
    a verdict on it (ppocr_det's, layout_cdla's and basic_pitch's int8 from Olive 0.13 on
    ONNX Runtime 1.32, 2026-12-05), not a failure of the workflow."""
    try:
        return evaluate(model, samples, metric)
    except Exception as exc:  # noqa: BLE001 - the model's failure is the finding
        return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"}


def workflow_config(workflow: str, model: Path, calibration: Path, out: Path) -> dict[str, Any]:
    """The run config of `workflow`'s passes (`ort-int8-eval`: those of `ort-int8`; its
    evaluation is `evaluate`)."""
    if workflow in ("ort-int8", "ort-int8-eval"):
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
        "data_configs": [_npz_data("calibration", calibration)],
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
            if job["workflow"] == "ort-int8-eval":
                samples, metric = Path(job["samples"]), job["metric"]
                result["evaluation"] = {
                    "input": evaluate(Path(job["model"]), samples, metric),
                    "output": _evaluated(Path(result["artifact"]), samples, metric),
                }
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
