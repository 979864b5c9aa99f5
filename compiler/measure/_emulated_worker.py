"""Runs arm artifacts inside the emulated aarch64 Python (started by compiler.measure.emulation).

Each artifact is loaded by its backend's runtime module (targets/runtime_index.py), the code
the serving runner uses, from the settings the manifest stores. Everything imported here is
bare (standard library, numpy, the runtime): the emulated Python has numpy and the aarch64
runtimes in its site folder and the project root on PYTHONPATH, no pydantic and no onnx
(importing them would cost seconds under emulation, and they are not there).

Usage: python3.11 _emulated_worker.py JOB.json

JOB.json: {"protocol": 1, "feeds": "feeds.npz" (compiler.core.feeds format), "threads": int,
"out_dir": str, "artifacts": [{"index", "id", "backend", "dir", "runtime" (settings JSON),
"outputs"}]}. For each artifact, in order, it writes <out_dir>/<index>.npz (feeds format) on
success and appends one JSON line to <out_dir>/results.jsonl; the host treats a missing line
as "the worker died on this artifact".
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.errors import short_message
from compiler.core.feeds import Feeds, read_feeds_npz, write_feeds_npz
from compiler.core.settings import OpenVinoSettings, settings_from_json
from targets.runtime_index import load_runtime

__all__ = ["PROTOCOL", "main"]

PROTOCOL = 1


def _cpu_features() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() == "features":
                    return sorted(value.split())
    except OSError:
        pass
    return []


def _run_one(
    art: dict[str, Any], feeds: list[Feeds], threads: int, out_dir: Path
) -> dict[str, Any]:
    index = art["index"]
    rec: dict[str, Any] = {"index": index, "id": art["id"], "backend": art["backend"]}
    try:
        runtime = load_runtime(art["backend"])
        settings = settings_from_json(art["runtime"])
        if isinstance(settings, OpenVinoSettings):
            # the graph as built is what this check is for; a compile per input shape
            # (static_shapes) would be one more OpenVINO compile at emulated speed
            settings = dataclasses.replace(settings, static_shapes=0)
        loaded = runtime.load(Path(art["dir"]), settings, art["outputs"], threads=threads or None)
    except Exception as exc:
        return rec | {"ok": False, "stage": "load", "error": short_message(exc, 600)}
    try:
        details = loaded.describe()
        rec |= {"runtime_version": str(details.get("runtime", "")).partition(" ")[2]}
        rec |= {"details": details}
        outs = [loaded.run(feed) for feed in feeds]
    except Exception as exc:
        return rec | {"ok": False, "stage": "run", "error": short_message(exc, 600)}
    finally:
        loaded.close()
    path = out_dir / f"{index:03d}.npz"
    write_feeds_npz(path, outs)
    return rec | {"ok": True, "outputs": path.name}


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    if job.get("protocol") != PROTOCOL:
        print(f"worker speaks protocol {PROTOCOL}, job has {job.get('protocol')}", file=sys.stderr)
        return 2
    out_dir = Path(job["out_dir"])
    header = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_features": _cpu_features(),
        "cpu_count": os.cpu_count() or 1,
    }
    (out_dir / "header.json").write_text(json.dumps(header), encoding="utf-8")
    feeds = read_feeds_npz(Path(job["feeds"]))
    with open(out_dir / "results.jsonl", "a", encoding="utf-8") as results:
        for art in job["artifacts"]:
            try:
                rec = _run_one(art, feeds, int(job.get("threads", 0)), out_dir)
            except Exception as exc:  # anything else: still a verdict on this artifact
                rec = {
                    "index": art["index"],
                    "id": art["id"],
                    "ok": False,
                    "stage": "worker",
                    "error": short_message(exc, 600),
                    "trace": traceback.format_exc(limit=4),
                }
            results.write(json.dumps(rec) + "\n")
            results.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
