"""One latency contender in a process of its own (started by compiler.measure.workers).

    python -m compiler.measure.latency_worker JOB.json

JOB.json (protocol 2): {"protocol", "backend", "dir", "runtime" (settings JSON as the manifest
stores them), "contract" (JSON), "feeds" (.npz, compiler.core.feeds format: the first feed is
timed), "threads" (0: the runtime's default), "cache_dir", "warmup"}. The artifact is loaded
through `targets.runner.open_runner`, as serving loads it, and warmed up once the first line
on stdin asks for it; each line on stdin is a command and each answer one JSON line on the
reply channel:

    {"op": "load"}                             -> {"ok": true, "ready": {...}} (first only)
    {"op": "block", "runs": N, "settle_s": S} -> {"ok": true, "times_s": [...]}
    {"op": "exit"} (or end of input)           -> the process ends

A parent starts both contenders' workers at once and has them load one at a time: their
interpreters start and import side by side, and no load or warm-up shares the cores.
The answer to `load` is {"ok": true, "ready": {"describe", "load_s", "warmup_s",
"steady_s"}}: `steady_s` are runs timed after the warm-up until STEADY_S have passed (at
least three), whose median is what the parent sizes its blocks by; a warm-up run may hold
one-off work (a first run's allocations, OpenVINO's compile for a shape seen twice: 83 ms
of 3 warm-up runs of 0.6 ms each), and blocks sized by it held 3 runs instead of 30.
A failure is {"ok": false, "stage": "load"|"run", "error": "..."}. The reply channel is the
original stdout; stdout itself is pointed at stderr first, so a runtime that prints cannot
corrupt the protocol. The worker pins nothing: threads are the runtime's own choice (or
`threads`), and the runner's `describe()` says what it used.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from compiler.core.contract import Contract
from compiler.core.errors import short_message
from compiler.core.feeds import Feeds, read_feeds_npz
from compiler.core.settings import settings_from_json
from targets.runner import Runner, open_runner

__all__ = ["PROTOCOL", "STEADY_S", "main"]

PROTOCOL = 2
STEADY_S = 0.05  # the steady runs' total time after the warm-up


def _send(reply: IO[str], message: dict[str, Any]) -> None:
    reply.write(json.dumps(message) + "\n")
    reply.flush()


def _timed(runner: Runner, feed: Feeds, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        runner.run_checked(feed)
        times.append(time.perf_counter() - t0)
    return times


def _open(job: dict[str, Any]) -> tuple[Runner, Feeds, dict[str, Any]]:
    contract = Contract.model_validate(job["contract"])
    runner = open_runner(
        job["backend"],
        Path(job["dir"]),
        settings_from_json(job["runtime"]),
        contract,
        threads=int(job.get("threads") or 0) or None,
        cache_dir=Path(job["cache_dir"]) if job.get("cache_dir") else None,
    )
    feed = contract.validate_feeds(read_feeds_npz(Path(job["feeds"]))[0])
    t0 = time.perf_counter()
    runner.load()
    load_s = time.perf_counter() - t0
    warmup = _timed(runner, feed, max(1, int(job.get("warmup", 1))))
    runner.sync()  # work the warm-up started (OpenVINO's compile for the shape) is done
    steady: list[float] = []
    while len(steady) < 3 or (sum(steady) < STEADY_S and len(steady) < 1000):
        steady += _timed(runner, feed, 1)
    ready = {"describe": runner.describe(), "load_s": load_s, "warmup_s": warmup}
    return runner, feed, {**ready, "steady_s": steady}


def serve(job: dict[str, Any], commands: IO[str], reply: IO[str]) -> int:
    """On `load`, load the contender, then answer commands until `exit` or the end of
    input."""
    first = commands.readline()
    if not first or json.loads(first).get("op") != "load":
        return 0
    try:
        runner, feed, ready = _open(job)
    except Exception as exc:  # the contender's failure is the answer, not a crash
        _send(reply, {"ok": False, "stage": "load", "error": short_message(exc, 600)})
        return 1
    _send(reply, {"ok": True, "ready": ready})
    try:
        for line in commands:
            cmd = json.loads(line)
            if cmd.get("op") != "block":
                break
            time.sleep(float(cmd.get("settle_s", 0.0)))  # the other worker's threads park
            try:
                runner.run_checked(feed)  # untimed: re-warms caches after the other worker
                times = _timed(runner, feed, int(cmd["runs"]))
            except Exception as exc:
                _send(reply, {"ok": False, "stage": "run", "error": short_message(exc, 600)})
                return 1
            _send(reply, {"ok": True, "times_s": times})
    finally:
        runner.close()
    return 0


def main(argv: list[str]) -> int:
    reply = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything a runtime prints goes to stderr, never into the replies
    job = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    if job.get("protocol") != PROTOCOL:
        _send(reply, {"ok": False, "stage": "load", "error": f"protocol {job.get('protocol')}"})
        return 2
    return serve(job, sys.stdin, reply)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
