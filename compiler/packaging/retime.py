"""A second measurement of the speedups that were taken while the host ran slow.

Every verify node of a build times the reference model next to its artifact, on the same
input with the same threads, so the reference is a control that runs in every node.
Contention the machine itself does not show (another virtual machine on the same cores: the
load average stays low) slows the reference with the artifact, and the ratio taken then is
not the one a quiet host gives. Found on MiniLM: during one build the reference ran at
3.42-4.08 ms across the verify nodes and OpenVINO int8 was recorded at 2.01x [1.92-2.08];
a rebuild ten minutes later measured the reference at 3.32-3.44 ms and the same bytes at
2.87x [2.73-2.91]. Serving picked the bf16 artifact on the first build's figures.

So after a build, each artifact's build record whose reference ran more than `DRIFT`
slower than the fastest reference of the build (on this host, at the same batch) is
measured once more. Where the reference ran faster the second time, the second record is
appended: both stay in the package, serving reads the latest build record of a host like
its own (compiler/serving/selection.py), and the record says why it was taken. It carries
the first record's runtime-settings sweep and throughput figures, which were not measured
again. Where the host was still as slow (slow spells last minutes here), the first record
stands and says so, with the second measurement's figures. The second measurements are kept
in the build cache by what they measured again, so a warm build takes none again.

Not caught: a whole build inside one slow spell (every reference equally slow). voice_encoder
was built so once: the reference at 4.1 ms in every verify node, 2.9 ms on a quiet host, and
OpenVINO bf16 recorded at 1.00x against 1.21-1.23x on a quiet host.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from compiler.core.feeds import Feeds, read_feeds_npz
from compiler.core.files import write_atomically
from compiler.core.hashing import sha256_json
from compiler.core.host import HostInfo, probe_host
from compiler.core.records import LatencyRecord, MeasuredOn
from compiler.measure.timing import measure_latency
from compiler.measure.verify import measured_on
from compiler.measure.workers import Contender
from compiler.packaging.write import rewrite_manifest
from compiler.pipeline.normalize import MODEL_FILE
from compiler.serving.manifest import Manifest, read_manifest

_M = TypeVar("_M", bound=BaseModel)

__all__ = ["DRIFT", "Retimed", "perturbed", "record_feed", "retime_perturbed"]

log = logging.getLogger(__name__)

# how much slower than the build's fastest reference a record's reference may have run; the
# spread across the verify nodes of a quiet build was 1-8 % on ten real models (this host)
DRIFT = 0.10
RETIME_VERSION = "retime-1"  # in the stored measurements' keys


@dataclass(frozen=True)
class Retimed:
    """One artifact measured again: why, and the speedup before and after."""

    id: str
    why: str
    first: LatencyRecord
    second: LatencyRecord


def perturbed(records: dict[str, LatencyRecord]) -> dict[str, str]:
    """Artifact id -> why its record's reference ran slow, for the records (one per artifact,
    all taken on one host at one batch) whose reference ran more than DRIFT slower than the
    fastest among them."""
    pace = {
        aid: r.reference.p50_ms
        for aid, r in records.items()
        if r.reference is not None and r.measured
    }
    if len(pace) < 2:
        return {}
    fastest_id = min(pace, key=pace.__getitem__)
    fastest = pace[fastest_id]
    out = {}
    for aid, ran in pace.items():
        if fastest > 0 and ran > fastest * (1 + DRIFT):
            out[aid] = (
                f"during the first measurement the reference "
                f"ran {ran / fastest - 1:.0%} slower ({ran:.3f} ms p50) than in the build's "
                f"fastest node ({fastest:.3f} ms, {fastest_id}), so the host was slow then"
            )
    return out


def retime_perturbed(
    package: Path, store: Path | None = None, host: HostInfo | None = None
) -> list[Retimed]:
    """Measure again the artifacts of `package` (being assembled, or written) whose build
    record was taken while the host ran slow (the module docstring says how that is told),
    append the new records and rewrite the manifest. Records of other hosts and batches are
    left alone. `store` (a folder in the build cache): the second measurements by what they
    measured again, so a warm build, whose verify records come from the cache as they were,
    reuses the second measurement instead of taking it again. `host`: this host, as the
    build probed it (probed here when not given)."""
    m = read_manifest(package)
    host = host or probe_host()
    on = measured_on(host)
    latest = {
        aid: ms.latency[-1]
        for aid, ms in m.measurements.items()
        if ms.latency and ms.latency[-1].source == "build"
    }
    here = {
        aid: r
        for aid, r in latest.items()
        if r.host.hostname == host.hostname and r.host.cpu_model == host.cpu_model
    }
    done: list[Retimed] = []
    feeds: list[Feeds] = []  # the reference inputs, read once something is measured again
    for batch in sorted({r.batch for r in here.values()}):
        slow = perturbed({aid: r for aid, r in here.items() if r.batch == batch})
        for aid, why in slow.items():
            first = here[aid]
            key = _key(m, aid, first)
            second = read_stored(store, key, LatencyRecord)
            if second is None:
                feeds = feeds or read_feeds_npz(package / "reference" / "inputs.npz")
                second = _measure_again(package, m, aid, first, feeds, on)
                if store is not None:
                    write_atomically(store / f"{key}.json", second.model_dump_json().encode())
            done.append(Retimed(aid, why, first, second))
            log.info("%s %s: %s -> %s", aid, why, _speedup(first), _speedup(second))
            if _ran_faster(second, first):
                m.measured(aid).latency.append(
                    second.model_copy(
                        update={
                            "reason": f"measured again after the build: {why}",
                            "tuning": first.tuning,
                            "throughput": first.throughput,
                        }
                    )
                )
            else:  # still as slow: the first stands, and says it was checked
                still = (
                    f"{why}; measured again after the build, the host was still as slow "
                    f"({_reference(second)}, speedup {_speedup(second)}): this record stands"
                )
                m.measured(aid).latency[-1] = first.model_copy(update={"reason": still})
    if done:
        rewrite_manifest(package, m)
    return done


def _measure_again(
    package: Path,
    m: Manifest,
    aid: str,
    first: LatencyRecord,
    feeds: list[Feeds],
    on: MeasuredOn,
) -> LatencyRecord:
    """`aid` timed against the reference once more, on the input and settings of `first`."""
    a = m.artifact(aid)
    assert a.runtime is not None
    runtime = (
        first.tuning.settings if first.tuning and first.tuning.status == "tuned" else a.runtime
    )
    feed = record_feed(feeds, first)
    contender = Contender(aid, a.backend, package / a.directory, runtime)
    ref_model = package / "reference" / MODEL_FILE
    return measure_latency(contender, feed, m.contract, ref_model, m.policy.latency, on)


def record_feed(feeds: list[Feeds], first: LatencyRecord) -> Feeds:
    """The reference input `first` was timed on (by its shapes), else the first."""
    return next(
        (f for f in feeds if {k: list(v.shape) for k, v in f.items()} == first.input_shapes),
        feeds[0],
    )


def _key(m: Manifest, aid: str, first: LatencyRecord) -> str:
    """What a second measurement measured again: the artifact's files and the first record."""
    files = sorted(f.sha256 for f in m.artifact(aid).files)
    return sha256_json([RETIME_VERSION, aid, files, first.model_dump(mode="json")])


def read_stored(store: Path | None, key: str, kind: type[_M]) -> _M | None:
    """The measurement stored under `key`, or None where there is no store, nothing stored,
    or what is stored is unreadable (then it is measured again and written anew)."""
    path = store / f"{key}.json" if store is not None else None
    if path is None or not path.is_file():
        return None
    try:
        return kind.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _speedup(r: LatencyRecord) -> str:
    return r.speedup.describe() if r.speedup is not None else r.status


def _reference(r: LatencyRecord) -> str:
    return f"reference {r.reference.p50_ms:.3f} ms p50" if r.reference else "no reference time"


def _ran_faster(second: LatencyRecord, first: LatencyRecord) -> bool:
    """Whether the second measurement's reference ran faster: the host was less slow then."""
    if not second.measured or second.reference is None or first.reference is None:
        return False
    return second.reference.p50_ms < first.reference.p50_ms
