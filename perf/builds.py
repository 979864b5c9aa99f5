"""Builds through the real CLI, each a child process: wall time, peak memory, node counts.

Peak memory is the CLI's ru_maxrss from wait4(2): the largest resident set of the
`compile-pkg` process or of any child it waited for (Linux reports the maximum of both). A
child's ru_maxrss starts at its parent's resident set when it was forked, so the CLI is
started by a small launcher (this module run as a script: stdlib only, about 10 MiB), not
straight from the benchmark process and its hundreds of MiB of loaded runtimes.
Node counts come from the package's manifest (`build.nodes`: ran / cached / skipped / failed),
and so do the seconds of each node that ran (where a build's time went).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BuildRun", "cli_build", "node_counts", "node_seconds", "run_olive"]


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
    node_seconds: dict[str, float] = field(default_factory=dict)  # of the nodes that ran

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
            "node_seconds": self.node_seconds,
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


def node_seconds(package: Path) -> dict[str, float]:
    """{node id: seconds} of the nodes that ran, from the package's manifest: a node's own
    time in its worker, whatever ran beside it (the build's wall time is not their sum)."""
    manifest = json.loads((package / "manifest.json").read_text(encoding="utf-8"))
    return {
        node["node"]: float(node["seconds"])
        for node in manifest["build"]["nodes"]
        if node["status"] == "ran"
    }


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
    usage_path = log.with_suffix(".rusage.json")
    usage_path.unlink(missing_ok=True)
    launcher = [sys.executable, __file__, str(usage_path), str(timeout_s), "--", *argv]
    env = {**os.environ, "COLUMNS": "160"}
    with log.open("w", encoding="utf-8") as fh:
        start = time.perf_counter()
        subprocess.run(launcher, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False)
        seconds = time.perf_counter() - start
    usage = json.loads(usage_path.read_text(encoding="utf-8"))
    returncode = int(usage["returncode"])
    tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-12:])
    built = (out / "manifest.json").is_file() and returncode == 0
    nodes, ran = node_counts(out) if built else ({}, [])
    root = str(Path.cwd()) + os.sep
    shown = ["python" if a == sys.executable else a.replace(root, "") for a in argv]
    return BuildRun(
        label=label,
        argv=shown,
        returncode=returncode,
        seconds=round(usage.get("seconds", seconds), 3),
        peak_rss_mib=round(usage["maxrss_kib"] / 1024, 1),
        nodes=nodes,
        reran=ran,
        log_tail=tail,
        node_seconds=node_seconds(out) if built else {},
    )


def _launch(usage_path: str, timeout_s: str, argv: list[str]) -> int:
    """Run `argv`, wait4 it, write {returncode, maxrss_kib, seconds, cpu seconds} as JSON."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv)
    deadline = start + float(timeout_s)
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
    rc = os.waitstatus_to_exitcode(status)
    record = {
        "returncode": rc,
        "maxrss_kib": usage.ru_maxrss,
        "seconds": seconds,
        "user_s": usage.ru_utime,
        "system_s": usage.ru_stime,
    }
    Path(usage_path).write_text(json.dumps(record), encoding="utf-8")
    return 0


if __name__ == "__main__":  # the launcher: builds.py USAGE.json TIMEOUT_S -- ARGV...
    sys.exit(_launch(sys.argv[1], sys.argv[2], sys.argv[sys.argv.index("--") + 1 :]))


def run_olive(jobs: list[dict[str, Any]], work: Path, timeout_s: float) -> dict[str, Any]:
    """Every Olive job in a fresh child process of its own, as `olive run` runs one
    workflow: {"jobs": [...]} or {"error": why}. Each job gets `process_seconds`, the wall
    time of its whole process (interpreter start, Olive's import, the workflow, exit: Olive's
    wall time for the job, what a cold `compile-pkg` build is set against), beside
    `seconds` (the workflow alone) and its own `import_seconds`. One process for all jobs
    paid the import and the first job's lazy imports once and undercounted the others
    (magika: 0.33 s there, a 4.6 s process alone, 2026-12-05). A job that fails or runs past
    `timeout_s` is recorded with the reason; the others still run."""
    if not jobs:
        return {"skipped": "no Olive jobs (--no-olive)", "jobs": []}
    try:
        importlib.metadata.version("olive-ai")
    except importlib.metadata.PackageNotFoundError:
        return {
            "error": "olive-ai is not installed: pip install -r perf/requirements.txt "
            "(see perf/README.md)",
            "jobs": [],
        }
    env = {**os.environ, "OLIVE_DISABLE_TELEMETRY": "1", "CI": "1"}
    doc: dict[str, Any] = {"jobs": [], "per_process": True}
    start = time.perf_counter()
    (work / "olive.log").unlink(missing_ok=True)
    for i, job in enumerate(jobs):
        jobs_path, results_path = work / f"olive-job-{i}.json", work / f"olive-result-{i}.json"
        jobs_path.write_text(json.dumps([job], indent=2), encoding="utf-8")
        results_path.unlink(missing_ok=True)
        begun = time.perf_counter()
        with (work / "olive.log").open("a", encoding="utf-8") as log:
            log.write(f"=== {job['id']}\n")
            log.flush()
            try:
                proc = subprocess.run(
                    [
                        sys.executable,
                        str(Path(__file__).with_name("olive_peer.py")),
                        str(jobs_path),
                        str(results_path),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    timeout=timeout_s,
                    check=False,
                )
                rc: int | str = proc.returncode
            except subprocess.TimeoutExpired:
                rc = f"killed after {timeout_s:.0f} s"
        wall = round(time.perf_counter() - begun, 3)
        got = json.loads(results_path.read_text()) if results_path.is_file() else {"jobs": []}
        if "olive_version" in got:
            doc["olive_version"] = got["olive_version"]
        if got["jobs"]:
            result = {**got["jobs"][0], "import_seconds": got.get("import_seconds")}
        else:
            tail = (work / "olive.log").read_text(errors="replace").splitlines()[-5:]
            result = {
                "id": job["id"],
                "workflow": job["workflow"],
                "seconds": 0.0,
                "error": f"Olive process exited {rc}: " + " | ".join(tail)[:600],
            }
        result["process_seconds"], result["returncode"] = wall, rc
        doc["jobs"].append(result)
    imports = sorted(j["import_seconds"] for j in doc["jobs"] if j.get("import_seconds"))
    if imports:  # the median process's import, for the reports' prose
        doc["import_seconds"] = imports[len(imports) // 2]
    doc["process_seconds"] = round(time.perf_counter() - start, 3)
    return doc
