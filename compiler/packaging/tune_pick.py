"""Runtime settings swept for the artifact serving picks on the build host, after the build.

A sweep of every artifact (`tuning.enabled`, compiler/measure/tuning.py) costs its cap per
artifact, most of it on artifacts serving never runs: failed, slower, or on another target.
Serving runs one artifact per host, so by default the sweep runs once, on the artifact this
host would pick: after the verdicts and the second measurements (retime.py), serving's order
on this host (compiler/serving/selection.py `rank`) names it. Measured on the AMX host of
2026-12-02 (perf/results/2026-12-02-amx-picks-quick-tuned.md), sweeping the pick took
ppocr_cls's OpenVINO f32 from 1.31x to 1.60x and voice_encoder's bf16 from 1.12x to 1.46x.

When the pick is the reference itself, the first artifact after it is swept (an artifact a
sweep makes faster than the reference goes ahead of it; the reference is the yardstick and
keeps its default settings). Only artifacts of a tunable backend (ONNX Runtime, OpenVINO)
whose latest build record was taken on this host and carries no sweep are swept.

What is recorded: where the sweep adopted settings, the artifact is timed against the
reference again with them, and that record (carrying the sweep) is appended to its build
records, once its reference ran at the build's pace: a timing whose reference ran more than
retime.DRIFT slower than in the build's fastest record on this host is taken once more, and
where that one ran slow too, the defaults' record stands with the sweep attached and why (on
a 2-vCPU host a busy neighbour slows the two-thread reference more than a one-thread pick:
ppocr_cls's reference ran at 1.145 ms in such a timing, 0.51-0.53 ms in the build's others,
and the pick read 4.11x against 1.8-2.0x in the benchmark's own measurements); selection reads the latest build record of a host like its own, and serving applies
the adopted settings on a host like this one (compiler/core/records.py `tuned_runtime`).
Where the defaults stay, the sweep is attached to the latest record as it is. Serving's
order is then taken again (the manifest's selection record). Only the first pick is swept:
an artifact the sweep would have made faster than the tuned pick is not looked for.

The results are kept in the build cache by what they measured (the artifact's files, its
record, the cap), so a warm build takes none again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from compiler.core.feeds import read_feeds_npz
from compiler.core.files import write_atomically
from compiler.core.hashing import sha256_json
from compiler.core.host import HostInfo, probe_host
from compiler.core.records import LatencyRecord, TunedSettings
from compiler.measure.timing import measure_latency
from compiler.measure.tuning import TUNABLE, skipped_tuning, tune
from compiler.measure.verify import measured_on
from compiler.measure.workers import Contender
from compiler.packaging.retime import perturbed, read_stored, record_feed
from compiler.packaging.write import rewrite_manifest
from compiler.pipeline.normalize import MODEL_FILE
from compiler.serving.manifest import Manifest, read_manifest
from compiler.serving.selection import REFERENCE, rank

__all__ = ["PickTuned", "slow_beside_build", "tune_pick"]

log = logging.getLogger(__name__)

# in the stored results' keys; 2: a timing whose reference ran slow is taken again
TUNE_PICK_VERSION = "tune-pick-2"


@dataclass(frozen=True)
class PickTuned:
    """The artifact swept after the build: the sweep, and its record timed again with the
    adopted settings (None where the defaults stayed)."""

    id: str
    tuning: TunedSettings
    second: LatencyRecord | None


class _Stored(BaseModel):
    tuning: TunedSettings
    second: LatencyRecord | None = None
    slow: str = ""  # why the timings with the adopted settings were not kept ('' kept)


def slow_beside_build(m: Manifest, timed: LatencyRecord) -> str:
    """Why `timed`'s reference ran slow beside the build's latest records of its host and
    batch (retime.perturbed: more than DRIFT slower than the fastest), '' where it did not."""
    mine = "(timed again)"
    here = {
        aid: ms.latency[-1]
        for aid, ms in m.measurements.items()
        if ms.latency
        and ms.latency[-1].source == "build"
        and ms.latency[-1].batch == timed.batch
        and ms.latency[-1].host.hostname == timed.host.hostname
        and ms.latency[-1].host.cpu_model == timed.host.cpu_model
    }
    return perturbed({**here, mine: timed}).get(mine, "")


def _to_sweep(m: Manifest, host: HostInfo) -> str | None:
    """The artifact to sweep: serving's first choice on `host`, or the first after the
    reference where that is the choice; None when it is no artifact a sweep applies to."""
    ordered, _ = rank(m, host)
    first = next((c.id for c in ordered if c.id != REFERENCE), None)
    if first is None:
        return None
    a = m.artifact(first)
    if a.backend not in TUNABLE or a.runtime is None or a.status != "built":
        return None
    builds = [r for r in m.measured(first).latency if r.source == "build"]
    if not builds or not builds[-1].measured or builds[-1].tuning is not None:
        return None  # nothing timed here to compare with, or already swept at build
    h = builds[-1].host
    if h.hostname != host.hostname or h.cpu_model != host.cpu_model:
        return None
    return first


def tune_pick(
    package: Path, seconds: float, store: Path | None = None, host: HostInfo | None = None
) -> PickTuned | None:
    """Sweep the runtime settings of the artifact serving picks on this host in `package`
    (being assembled, or written) for about `seconds`, record the result and rewrite the
    manifest (the module docstring says which artifact and what is recorded). `store`: a
    folder in the build cache holding results by what they measured."""
    m = read_manifest(package)
    host = host or probe_host()
    aid = _to_sweep(m, host)
    if aid is None:
        return None
    a = m.artifact(aid)
    assert a.runtime is not None
    first = next(r for r in reversed(m.measured(aid).latency) if r.source == "build")
    key = sha256_json(
        [
            TUNE_PICK_VERSION,
            aid,
            sorted(f.sha256 for f in a.files),
            first.model_dump(mode="json"),
            seconds,
        ]
    )
    done = read_stored(store, key, _Stored)
    if done is None:
        feed = record_feed(read_feeds_npz(package / "reference" / "inputs.npz"), first)
        contender = Contender(aid, a.backend, package / a.directory, a.runtime)
        on = measured_on(host)
        try:
            swept = tune(contender, feed, m.contract, m.policy.latency, seconds, on)
            second, slow = None, ""
            if swept.adopted != "default":
                tuned = Contender(aid, a.backend, package / a.directory, swept.settings)
                ref_model = package / "reference" / MODEL_FILE
                policy = m.policy.latency
                for _ in range(2):  # a timing while the host ran slow is taken once more
                    second = measure_latency(tuned, feed, m.contract, ref_model, policy, on)
                    slow = slow_beside_build(m, second) if second.measured else ""
                    if not slow:
                        break
                if slow:
                    second = None
        except Exception as exc:  # a measurement, never worth the package: recorded, not kept
            why = f"the sweep after the build failed: {type(exc).__name__}: {exc}"
            log.warning("%s: %s", aid, why)
            swept, second = skipped_tuning(a.runtime, on, why), None
            done = _Stored(tuning=swept)
        else:
            done = _Stored(tuning=swept, second=second, slow=slow)
            if store is not None:
                write_atomically(store / f"{key}.json", done.model_dump_json().encode())
    records = m.measured(aid).latency
    at = len(records) - 1 - records[::-1].index(first)
    if done.second is not None and done.second.measured:
        records.append(
            done.second.model_copy(
                update={
                    "reason": (
                        "measured again after the build with the runtime settings the pick's "
                        f"sweep adopted ({done.tuning.adopted}); its throughput figures are the "
                        "build's, with the defaults"
                    ),
                    "tuning": done.tuning,
                    "throughput": first.throughput,
                }
            )
        )
    else:
        records[at] = first.model_copy(update={"tuning": _kept(done)})
    log.info("%s: runtime settings swept after the build: %s", aid, done.tuning.adopted)
    rewrite_manifest(package, m)
    return PickTuned(aid, done.tuning, done.second)


def _kept(done: _Stored) -> TunedSettings:
    """The sweep as attached where its settings are not served: adopted ones whose second
    timing measured nothing, or ran while the host was slow twice, stay recorded, with the
    defaults kept and why."""
    t = done.tuning
    if t.adopted == "default":
        return t
    why = (
        f"{t.adopted} was adopted, but both timings of it against the reference ran while the "
        f"host was slow ({done.slow}): the defaults' record stands"
        if done.slow
        else f"{t.adopted} was adopted, but timing it again against the reference measured nothing"
    )
    return t.model_copy(
        update={
            "adopted": "default",
            "settings": t.default,
            "reason": "; ".join(r for r in (t.reason, why) if r),
        }
    )
