"""Serving while a deferred TensorRT engine builds on this host.

The loader starts one build per process (the most promising deferred artifact first: see
`order_deferred`; the engine cache's lock makes it one per host), serves the best ready
artifact meanwhile, and switches to the engine only once it exists **and** passes parity
against the package's reference here (`ParityGate`: the package's reference inputs, its
fp32 reference outputs, the package's parity policy at the artifact's precision). The switch
is thread-safe (`DeferredSwitch`): one request thread loads and checks the engine while the
others keep running on the fallback, and a request sees either runner, never half a switch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from compiler.core.errors import short_message
from compiler.core.feeds import Feeds, read_feeds_npz
from compiler.core.parity import IndexScores, compare_outputs, judge, read_scores
from compiler.serving.manifest import Manifest
from compiler.serving.selection import REFERENCE, Candidate
from targets.runner import Runner, SwitchingRunner

__all__ = ["DeferredSwitch", "ParityGate", "order_deferred"]

log = logging.getLogger("compile_pkg.loader")

# Without measurements on this host, the builds most likely to beat the fallback and pass
# parity come first: fp16 (TensorRT's fast path), then bf16; int8 QDQ engines are fast only
# where their Q/DQ nodes sit (the other layers run fp16, or fp32 when built strongly typed)
# and are the likeliest to miss parity; fp32 last.
_PROMISE = {"fp16": 0, "bf16": 1, "int8": 2, "fp32": 3}
MAX_SAMPLES = 32  # reference samples the gate runs (the package may hold more)


def order_deferred(
    candidates: Sequence[Candidate], manifest: Manifest, preferred: Sequence[str] = ()
) -> list[Candidate]:
    """`candidates` with the deferred ones the caller did not order put most promising
    first, in the places deferred candidates held; everything else keeps its rank."""
    deferred = [
        c
        for c in candidates
        if c.id != REFERENCE
        and manifest.artifact(c.id).status == "deferred"
        and c.id not in preferred
    ]
    best = iter(sorted(deferred, key=lambda c: _PROMISE.get(manifest.artifact(c.id).precision, 9)))
    return [next(best) if c in deferred else c for c in candidates]


class ParityGate:
    """Whether a runner agrees with the package's stored reference on this host."""

    def __init__(self, root: Path, manifest: Manifest, artifact: str) -> None:
        self.root, self.manifest, self.artifact = root, manifest, artifact

    def _reference(
        self,
    ) -> tuple[list[Feeds], list[Feeds], list[dict[str, IndexScores]] | None] | None:
        paths = {f.path for f in self.manifest.reference.files}
        if not {"reference/inputs.npz", "reference/outputs.npz"} <= paths:
            return None
        inputs = read_feeds_npz(self.root / "reference" / "inputs.npz")[:MAX_SAMPLES]
        outputs = read_feeds_npz(self.root / "reference" / "outputs.npz")[:MAX_SAMPLES]
        scores = read_scores(self.root / "reference")
        return inputs, outputs, scores[:MAX_SAMPLES] if scores is not None else None

    def check(self, runner: Runner) -> str:
        """'' when `runner` passes parity on the package's reference samples; else why not."""
        ref = self._reference()
        if ref is None:
            return "the package has no reference inputs and outputs to check the engine against"
        inputs, expected, scores = ref
        a = self.manifest.artifact(self.artifact)
        kinds = {o.name: o.kind for o in self.manifest.contract.outputs}
        policy = self.manifest.policy.parity
        try:
            outs: list[Mapping[str, np.ndarray]] = [runner.run(feed) for feed in inputs]
        except Exception as exc:  # noqa: BLE001 - an engine that cannot run fails the gate
            return f"the engine failed on the reference samples: {short_message(exc, 200)}"
        ok, per_output = compare_outputs(
            [dict(o) for o in outs],
            expected,
            lambda n: policy.tolerance(a.precision, n),
            kinds,
            scores,
        )
        if ok:
            return ""
        worst = next((n, m) for n, m in per_output.items() if not m.passed)
        return (
            f"parity failed on this host against the package's reference ({len(inputs)} "
            f"samples, {a.precision} tolerance): output '{worst[0]}': "
            + "; ".join(judge(worst[1], policy.tolerance(a.precision, worst[0])))
        )


class DeferredSwitch(SwitchingRunner):
    """Serve `fallback` until `pending`'s engine is built, loads and passes `gate`; then
    serve the engine. Safe to call from many threads at once."""

    def __init__(self, fallback: Runner, pending: Runner, gate: ParityGate | None) -> None:
        super().__init__(fallback, pending)
        self.gate = gate
        self.note = "serving the fallback while the engine builds on this host"
        self.switched = threading.Event()
        self._switching = threading.Lock()
        self._done = False  # the switch happened or will never happen

    def _maybe_switch(self) -> None:
        if self._done or not self._switching.acquire(blocking=False):
            return  # another thread is switching: this request runs on the fallback
        try:
            if not self._done:
                self._try_switch()
        finally:
            self._switching.release()

    def _try_switch(self) -> None:
        job = self.pending.build_job
        if job is None or job.state in ("pending", "building"):
            return
        if job.state == "failed":
            self._give_up(f"engine build failed, serving the fallback: {job.error}")
            return
        try:
            self.pending.load()
        except Exception as exc:  # noqa: BLE001 - keep serving the fallback
            self._give_up(f"engine built but did not load, serving the fallback: {exc}")
            return
        why = (
            self.gate.check(self.pending)
            if self.gate is not None
            else "no parity gate: the package's reference could not be read"
        )
        if why:
            self._give_up(f"engine built but not used: {why}")
            return
        self.active = self.pending  # one reference assignment: readers see old or new
        self.note = f"switched to {self.pending.name}: built here, passed parity here"
        self._done = True
        self.switched.set()
        log.info("%s", self.note)

    def _give_up(self, note: str) -> None:
        self.note, self._done = note, True
        self.pending.close()
        log.warning("%s", note)

    def close(self) -> None:
        with self._switching:
            self._done = True
            super().close()
