"""Builds through the real CLI, each a child process: wall time, peak memory, node counts.

Peak memory is the child's ru_maxrss from wait4(2): the largest resident set of the
`compile-pkg` process or of any child it waited for (Linux reports the maximum of both).
Node counts come from the package's manifest (`build.nodes`: ran / cached / skipped / failed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BuildRun", "cli_build", "node_counts"]


@dataclass
class BuildRun:
    label: str  # cold | warm | one-change
    argv: list[str]
    returncode: int
    seconds: float
    peak_rss_mib: float
    nodes: dict[str, int]
    reran: list[str]  # nodes that ran (not cached)
    log_tail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "argv": self.argv,
            "returncode": self.returncode,
            "seconds": self.seconds,
            "peak_rss_mib": self.peak_rss_mib,
            "nodes": self.nodes,
            "reran": self.reran,
            "log_tail": self.log_tail,
        }


def node_counts(package: Path) -> tuple[dict[str, int], list[str]]:
    """({status: count}, ids of nodes that ran) from the package's manifest."""
    manifest = json.loads((package / "manifest.json").read_text(encoding="utf-8"))
    counts: dict[str, int] = {}
    ran = []
    for node in manifest["build"]["nodes"]:
        counts[node["status"]] = counts.get(node["status"], 0) + 1
        if node["status"] == "ran":
            ran.append(node["node"])
    return dict(sorted(counts.items())), ran


def cli_build(
    label: str,
    model: Path,
    out: Path,
    *,
    targets: str,
    config: Path,
    samples: Path,
    calibration: Path,
    cache_dir: Path,
    overrides: tuple[str, ...] = (),
    log: Path,
    timeout_s: float = 1800,
) -> BuildRun:
    """`compile-pkg MODEL --targets ... -o OUT` in a child process, timed and measured."""
    argv = [
        sys.executable,
        "-m",
        "compiler.cli",
        str(model),
        "--targets",
        targets,
        "--config",
        str(config),
        "--sample-data",
        str(samples),
        "--calibration-data",
        str(calibration),
        "--cache-dir",
        str(cache_dir),
        "-o",
        str(out),
    ]
    for o in overrides:
        argv += ["--set", o]
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "COLUMNS": "160"}
    with log.open("w", encoding="utf-8") as fh:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env)
        deadline = start + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-12:])
    nodes, ran = (
        node_counts(out) if (out / "manifest.json").is_file() and proc.returncode == 0 else ({}, [])
    )
    root = str(Path.cwd()) + os.sep
    shown = ["python" if a == sys.executable else a.replace(root, "") for a in argv]
    return BuildRun(
        label=label,
        argv=shown,
        returncode=proc.returncode,
        seconds=round(seconds, 3),
        peak_rss_mib=round(usage.ru_maxrss / 1024, 1),
        nodes=nodes,
        reran=ran,
        log_tail=tail,
    )
