"""Rank a package's artifacts for a host: compatible, parity passed, then by speedup.

Used by the loader at load time (with the serving host) and at build time to record what the
build host would pick. Speedups are compared, never raw times from different runs: each
artifact's speedup over the reference was measured in one run, in paired blocks, with a
confidence interval (compiler/core/latency.py). The faster artifact (by the interval's lower
bound: the speed that survives a second measurement) comes first, except that a
lossy artifact (fp16, bf16, int8) comes after a more precise one of the same target unless its
speedup's lower bound is above the precise one's upper bound and at least `1 +
policy.selection.min_gain` times its estimate: precision that buys no measurable speed, or
less than the gain asked of any artifact over the reference, is not given up. Between int8 artifacts, the flavour that fits the host less
well (`int8_fit`: preferred, native, may saturate) yields the same way: on a VNNI host the
reduced-range one (7-bit weights, meant for AVX2) to full-range int8, on an AVX2 host
full-range int8 (whose sums may saturate there) to the reduced-range one.

Which latency records count: the build's own, on a host like the serving one (same
architecture and ISA class, compiler/core/isa.py; for GPU artifacts, the same GPU). Records a
later `compile-pkg verify` took are kept apart (`source: verify`, or a separate records file)
and count only when the caller asks (`use_verify_records`), so running verify never changes
the pick by itself.

The package's reference model (reference/model.onnx, the normalized fp32 model the
speedups were measured against) is the last candidate, under the id `reference`: served on
ONNX Runtime CPU with default settings, exactly as it was timed. An artifact comes ahead of
it only when its speedup's lower bound is at least `1 + policy.selection.min_gain`; one
measured no faster than that comes after it (and a package whose artifacts all failed still
serves the model it was built from). Where no candidate has latency of the host's class,
the reference comes after all of them: nothing says they are slower.

When no candidate has a record of the host's class (a package built on an AVX-512 VNNI host,
served on an AVX2 or AMX one), the order is a class prior (`_prior`, docs/hosts.md): on a
class with int8 dot products (VNNI, AMX, Arm dotprod) the int8 artifacts meant for it, then
other int8 that runs natively, bf16 where native, full precision, and last int8 that may
saturate there; on a class without (AVX2, AVX-512 without VNNI, plain NEON) full precision
first (int8 gains unproven there), then the int8 meant for it (the 7-bit `u8s8-rr`), the
other native int8, and last what saturates. Within a band, the preferred flavour, then the
more precise, then package order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from compiler.core.host import HostInfo, probe_host
from compiler.core.isa import Int8Flavour, IsaClass, int8_fit, traits
from compiler.core.latency import SpeedupInterval
from compiler.core.records import ArtifactMeasurements, LatencyRecord, ParityRecord
from compiler.serving.manifest import ArtifactEntry, Manifest, SelectionChoice, SelectionRecord

__all__ = [
    "LOSSINESS",
    "REFERENCE",
    "REFERENCE_MODEL",
    "Candidate",
    "has_reference_model",
    "latency_for",
    "lossiness",
    "parity_verdict",
    "rank",
    "select_order",
]

# How much a precision gives up, lowest first; an unknown precision counts as the lossiest.
LOSSINESS = {"fp32": 0, "fp16": 1, "bf16": 2, "int8": 3}
# The id serving gives the package's reference model (never an artifact id: those are
# "<target>/<variant>").
REFERENCE = "reference"
REFERENCE_MODEL = "reference/model.onnx"


def has_reference_model(manifest: Manifest) -> bool:
    """Whether the package ships its reference model (`compile-pkg build` does by default)."""
    return any(f.path == REFERENCE_MODEL for f in manifest.reference.files)


def lossiness(precision: str) -> int:
    return LOSSINESS.get(precision, max(LOSSINESS.values()))


@dataclass
class Candidate:
    id: str
    ok: bool
    reason: str
    speedup: SpeedupInterval | None = None
    latency_source: str = ""  # "build" or "verify": whose record the speedup comes from
    prior: str = ""  # ranked by the class prior: why it sits where it does


def _parity_records(
    manifest: Manifest, aid: str, verify: Mapping[str, ArtifactMeasurements] | None
) -> list[ParityRecord]:
    records = list(manifest.measured(aid).parity)
    if verify is not None and aid in verify:
        records += verify[aid].parity
    return records


def parity_verdict(
    manifest: Manifest,
    aid: str,
    verify: Mapping[str, ArtifactMeasurements] | None = None,
    host: HostInfo | None = None,
) -> tuple[str, str]:
    """('passed'|'failed'|'not-verified', how) from the latest decisive parity record (those
    of `verify`, a verify records file, after the manifest's own). For serving on `host`, a
    verdict on an int8 artifact taken on a host whose sums may saturate where `host`'s do
    not, or the other way, counts only where it still holds: the host's own class decides
    (`_sums_alike`), else a pass where the sums may saturate carries to a host where they do
    not (`_pass_carries`); a u8s8 failure on AVX2 says nothing of VNNI, a pass on VNNI
    nothing of AVX2."""
    records = _parity_records(manifest, aid, verify)
    if host is not None:
        a = manifest.artifact(aid)
        flavour = a.requirements.int8 if a.requirements is not None else None
        if flavour is not None:
            own = [r for r in records if _sums_alike(r, flavour, host)]
            carried = [r for r in records if _pass_carries(r, flavour, host)]
            dropped = [r for r in records if r.decisive and not _sums_alike(r, flavour, host)]
            if any(r.decisive for r in own) or not dropped:
                records = own
            elif carried:
                records = carried
            else:
                other = dropped[-1]
                cls = other.host.isa_class if other.host is not None else "?"
                there, here = (cls, host.isa_class)
                if int8_fit(flavour, here) == "saturates":
                    there, here = here, there
                why = (
                    f"its {flavour} int8 sums may saturate on {there} (no VNNI), not on {here}: "
                    f"the {other.status} verdict on {cls} does not hold on {host.isa_class}; "
                    "`compile-pkg verify --update` on a host of this class records one"
                )
                return "not-verified", why
    for rec in reversed(records):
        if rec.decisive:
            where = rec.host
            how = (
                f"{rec.mode} on {where.arch if where else '?'}"
                + (f" ({where.emulated})" if where and where.emulated else "")
                + (f", {where.gpus[0].name}" if where and where.gpus else "")
            )
            return rec.status, how
    return "not-verified", records[-1].reason if records else "no parity record"


def _saturates_on(flavour: Int8Flavour, cls: IsaClass) -> bool:
    return int8_fit(flavour, cls) == "saturates"


def _sums_alike(rec: ParityRecord, flavour: Int8Flavour, host: HostInfo) -> bool:
    """Whether `rec`, a verdict on an int8 artifact of `flavour`, was taken natively where its
    sums saturate exactly when they do on `host` (compiler/core/isa.py); cross-host and
    emulated records count as they are."""
    on = rec.host
    if on is None or rec.mode != "native" or on.arch != host.arch:
        return True
    return _saturates_on(flavour, on.isa_class) == _saturates_on(flavour, host.isa_class)


def _pass_carries(rec: ParityRecord, flavour: Int8Flavour, host: HostInfo) -> bool:
    """A pass taken where the sums may saturate, for a host where they do not: it stands
    there when that host has no verdict of its own (it sums exactly what was clamped). A
    failure does not carry (it may be the clamping), nor anything the other way."""
    on = rec.host
    return (
        not _sums_alike(rec, flavour, host)
        and on is not None
        and _saturates_on(flavour, on.isa_class)
        and rec.status == "passed"
    )


def _like(rec: LatencyRecord, a: ArtifactEntry, host: HostInfo) -> bool:
    """Measured natively on a host like `host`: same arch; for a GPU artifact, a same GPU;
    for a CPU artifact, the same ISA class (int8 and bf16 speed depend on it)."""
    h = rec.host
    if h.emulated or h.arch != host.arch:
        return False
    if a.requirements is not None and a.requirements.gpu:
        return bool({g.name for g in h.gpus} & {g.name for g in host.gpus})
    return h.isa_class == host.isa_class


def latency_for(
    manifest: Manifest,
    a: ArtifactEntry,
    host: HostInfo,
    *,
    use_verify_records: bool = False,
    verify: Mapping[str, ArtifactMeasurements] | None = None,
) -> LatencyRecord | None:
    """The latency record selection uses for `a` on `host`: with `use_verify_records`, the
    latest verify record on a host like it (the manifest's, then `verify`'s), else the latest
    build record on a host like it. Records that measured nothing (`error`) never count."""
    records = [r for r in manifest.measured(a.id).latency if r.status != "error"]
    if use_verify_records and verify is not None and a.id in verify:
        records += [r for r in verify[a.id].latency if r.status != "error"]
    like = [r for r in records if _like(r, a, host)]
    if use_verify_records:
        from_verify = [r for r in like if r.source == "verify"]
        if from_verify:
            return from_verify[-1]
    builds = [r for r in like if r.source == "build"]
    return builds[-1] if builds else None


def _beats(x: Candidate, y: Candidate, confidence: float, gain: float) -> bool:
    """x is faster than y beyond both intervals, at the policy's confidence, and its lower
    bound is at least `gain` times y's estimate."""
    if x.speedup is None or y.speedup is None:
        return False
    enough = min(x.speedup.confidence, y.speedup.confidence) >= confidence - 1e-9
    by = x.speedup.low >= gain * y.speedup.estimate - 1e-9
    return enough and x.speedup.beats(y.speedup) and by


def _beats_reference(c: Candidate, bound: float, confidence: float) -> bool:
    """c's speedup over the reference is at least `bound` at the policy's confidence."""
    s = c.speedup
    return s is not None and s.confidence >= confidence - 1e-9 and s.low >= bound - 1e-9


def _why_behind(s: SpeedupInterval | None, bound: float, confidence: float) -> str:
    """Why a candidate does not beat the reference (`_beats_reference` said no)."""
    if s is None:
        return "nothing measured shows it faster"
    if s.low < bound - 1e-9:
        return f"its speedup's lower bound {s.low:.2f}x is under 1 + min_gain ({bound:.2f}x)"
    return (
        f"its speedup's interval holds at {s.confidence:.0%}, under the policy's "
        f"{confidence:.0%} ({s.pairs} pairs: too few to count on)"
    )


_FIT_RANK = {"preferred": 0, "native": 1, "saturates": 2}


def _giving_up(a: ArtifactEntry, cls: IsaClass) -> tuple[int, int]:
    """How much `a` gives up on a host of class `cls`: its precision's lossiness, then, for
    int8, how well its flavour fits the class (an unrecorded flavour counts as fitting)."""
    flavour = a.requirements.int8 if a.requirements is not None else None
    fit = _FIT_RANK[int8_fit(flavour, cls)] if a.precision == "int8" and flavour else 0
    return lossiness(a.precision), fit


def _order_by_speedup(
    cands: list[Candidate],
    by_id: dict[str, ArtifactEntry],
    confidence: float,
    cls: IsaClass,
    gain: float,
) -> list[Candidate]:
    """Fastest first by the speed one can count on (the interval's lower bound, then the
    estimate): a wide interval from a noisy run does not outrank a narrow one (magika's
    ov-f32 at 1.62x [0.80-2.02] beside ort-fp32 at 1.00x [0.98-1.01]). A candidate yields
    to one of its target that gives up less (`_giving_up` on the host's class `cls`) unless
    it beats it beyond the intervals and by `gain` (1 + min_gain: its lower bound that many
    times the other's estimate), the margin the reference asks of any artifact (magika on a
    VNNI host: ort-int8-rr 2.20x [2.06-2.41] had gone ahead of full-range ort-int8 at 2.25x
    [2.05-2.47]; layout_cdla on AMX: ov-int8 4.87x [4.79-5.11] went ahead of ov-bf16 at
    4.71x, 3 % faster, and found one spurious box more on the held-out task)."""
    index = {a: i for i, a in enumerate(by_id)}

    def key(c: Candidate) -> tuple[bool, float, float, int]:
        if c.speedup is None:
            return (False, 0.0, 0.0, -index[c.id])
        return (True, c.speedup.low, c.speedup.estimate, -index[c.id])

    remaining, ordered = list(cands), []
    while remaining:
        best = max(remaining, key=key)
        while True:
            a = by_id[best.id]
            rivals = [
                r
                for r in remaining
                if by_id[r.id].target == a.target
                and _giving_up(by_id[r.id], cls) < _giving_up(a, cls)
                and not _beats(best, r, confidence, gain)
            ]
            if not rivals:
                break
            rival = max(rivals, key=key)
            if "; after " not in best.reason:
                best.reason += (
                    f"; after {rival.id}: {_what(a)} is not faster than "
                    f"{_what(by_id[rival.id])} beyond the intervals and by "
                    f"{gain:.2f}x (1 + min_gain)"
                )
            best = rival
        ordered.append(best)
        remaining.remove(best)
    return ordered


def _what(a: ArtifactEntry) -> str:
    """`int8 (u8s8-rr)`, `bf16`: the precision, with the int8 flavour where recorded."""
    flavour = a.requirements.int8 if a.requirements is not None else None
    return f"{a.precision} ({flavour})" if a.precision == "int8" and flavour else a.precision


def _prior(a: ArtifactEntry, cls: IsaClass) -> tuple[tuple[int, int, int], str]:
    """(band, preference within it, lossiness) and why, for a host of class `cls` where no
    latency of that class was measured (the module docstring gives the bands)."""
    t, req = traits(cls), a.requirements
    loss = lossiness(a.precision)
    full = 4 if t.int8_dot else 1  # the band of full precision on this class
    if req is not None and req.gpu:
        return (full, 0, loss), "a GPU artifact (no CPU class applies): with full precision"
    if a.precision == "bf16":
        if t.bf16:
            return (3, 0, loss), f"bf16 runs natively on {cls}"
        return (5, 0, loss), f"bf16 is emulated on {cls}, slower than full precision"
    if a.precision != "int8":
        what = "full precision" if a.precision == "fp32" else f"{a.precision}, with full precision"
        unproven = "" if t.int8_dot else f" ({cls} has no int8 dot products: int8 unproven)"
        return (full, 0, loss), what + unproven
    flavour = req.int8 if req is not None else None
    if flavour is None:
        return (2 if t.int8_dot else 3, 1, loss), "int8 of an unrecorded flavour"
    fit = int8_fit(flavour, cls)
    if fit == "preferred":
        return (1 if t.int8_dot else 2, t.preferred.index(flavour), loss), (
            f"int8 meant for {cls} ({flavour})"
        )
    if fit == "native":
        meant = ", ".join(req.meant_for) if req is not None and req.meant_for else "other classes"
        return (2 if t.int8_dot else 3, 0, loss), (
            f"int8 ({flavour}) runs natively on {cls} but is meant for {meant}"
        )
    return (6, 0, loss), f"int8 ({flavour}) may saturate on {cls} (no VNNI): last"


def _a(cls: IsaClass) -> str:
    return f"{'an' if cls[0] in 'aeiosx' else 'a'} {cls}"


def _measured_classes(manifest: Manifest, aid: str) -> list[str]:
    """The ISA classes an artifact's latency was measured on (natively)."""
    recs = manifest.measured(aid).latency
    return sorted(
        {r.host.isa_class for r in recs if r.status == "measured" and not r.host.emulated}
    )


def _order_by_prior(
    manifest: Manifest, cands: list[Candidate], by_id: dict[str, ArtifactEntry], host: HostInfo
) -> list[Candidate]:
    """No candidate has latency of the host's class: order by the class prior."""
    cls = host.isa_class
    index = {a: i for i, a in enumerate(by_id)}
    keyed = []
    for c in cands:
        key, why = _prior(by_id[c.id], cls)
        elsewhere = _measured_classes(manifest, c.id)
        where = f" (measured on {', '.join(elsewhere)} only)" if elsewhere else ""
        c.prior = f"; no latency measured on {_a(cls)} host{where}; ranked by class prior: {why}"
        keyed.append(((*key, index[c.id]), c))
    return [c for _, c in sorted(keyed, key=lambda kc: kc[0])]


def _candidate(
    manifest: Manifest,
    a: ArtifactEntry,
    host: HostInfo,
    allow_unverified: bool,
    use_verify_records: bool,
    verify: Mapping[str, ArtifactMeasurements] | None,
) -> Candidate:
    """One artifact judged on its own: compatible, parity, latency record."""
    if a.status not in ("built", "deferred"):
        return Candidate(a.id, False, f"{a.status}: {a.reason}")
    if a.requirements is None:
        return Candidate(a.id, False, "incompatible: no requirements recorded")
    why = a.requirements.mismatches(host)
    if why:
        return Candidate(a.id, False, "incompatible: " + "; ".join(m.message for m in why))
    verdict, how = parity_verdict(manifest, a.id, verify if use_verify_records else None, host)
    if a.status == "deferred" and verdict != "failed":
        # built on this host at first load (TensorRT); the loader serves the next candidate
        # until it is ready, so it must come first to be started at all
        return Candidate(
            a.id,
            True,
            "deferred build: the engine is built on this host at first load; its parity "
            "is not yet verified here",
        )
    if verdict == "failed":
        return Candidate(a.id, False, f"parity failed ({how})")
    if verdict == "not-verified" and not allow_unverified:
        return Candidate(a.id, False, f"parity not verified: {how}")
    rec = latency_for(manifest, a, host, use_verify_records=use_verify_records, verify=verify)
    if rec is not None and rec.status == "crashed":
        return Candidate(a.id, False, f"crashed while timed ({rec.source}): {rec.reason}")
    c = Candidate(a.id, True, f"parity {verdict} ({how})")
    if rec is not None and rec.speedup is not None:
        c.speedup, c.latency_source = rec.speedup, rec.source
    return c


def _reference(manifest: Manifest, host: HostInfo) -> list[Candidate]:
    """The reference as a candidate ([] when the package does not ship its model); not ok
    where ONNX Runtime cannot run it."""
    if not has_reference_model(manifest):
        return []
    if "onnxruntime" not in host.runtimes:
        return [Candidate(REFERENCE, False, "runtime 'onnxruntime' is not importable on this host")]
    return [
        Candidate(
            REFERENCE,
            True,
            "the package's reference: the normalized fp32 model on ONNX Runtime CPU with "
            "default settings, the model every speedup was measured against (1.00x by "
            "definition)",
        )
    ]


def rank(
    manifest: Manifest,
    host: HostInfo,
    *,
    order: list[str] | None = None,
    allow_unverified: bool = False,
    use_verify_records: bool = False,
    verify_records: Mapping[str, ArtifactMeasurements] | None = None,
) -> tuple[list[Candidate], list[Candidate]]:
    """(candidates in the order to try, excluded with reasons).

    order: artifact ids first, in this order (default: the package's policy). With
    `use_verify_records`, records `compile-pkg verify` took count too: those appended to the
    manifest (`--update`) and `verify_records` (a verify records file's measurements), ahead
    of the build's on a host like this one.
    """
    order = order if order is not None else manifest.policy.selection.order
    verify = verify_records if use_verify_records else None
    judged = [
        _candidate(manifest, a, host, allow_unverified, use_verify_records, verify)
        for a in manifest.artifacts
    ]
    ok = [c for c in judged if c.ok]
    excluded = [c for c in judged if not c.ok]
    by_id = {a.id: a for a in manifest.artifacts}
    first = sorted((c for c in ok if c.id in order), key=lambda c: order.index(c.id))
    deferred = [c for c in ok if c.id not in order and by_id[c.id].status == "deferred"]
    rest = [c for c in ok if c.id not in order and by_id[c.id].status != "deferred"]
    confidence = manifest.policy.latency.confidence
    judged_reference = _reference(manifest, host)
    reference = [c for c in judged_reference if c.ok]
    excluded += [c for c in judged_reference if not c.ok]
    if REFERENCE in order:
        first = sorted([*first, *reference], key=lambda c: order.index(c.id))
        reference = []
    if rest and all(c.speedup is None for c in rest):
        rest = [*_order_by_prior(manifest, rest, by_id, host), *reference]
    else:
        # The candidates that beat the reference go ahead of it, ordered among themselves
        # (a lossy one still yields to a more precise one it does not beat); the others come
        # after it. Partitioned first: a precise candidate no faster than the reference
        # cannot hold a lossy one that beats it behind the reference, which is more precise
        # still (voice_encoder: ort-fp32 1.01x [0.95-1.12] kept ov-bf16 1.14x [1.10-1.17]
        # behind it, and so behind the reference).
        bound = 1 + manifest.policy.selection.min_gain
        ahead = [c for c in rest if _beats_reference(c, bound, confidence)]
        behind = [c for c in rest if c not in ahead]
        for c in behind:
            c.reason += "; after the reference: " + _why_behind(c.speedup, bound, confidence)
        rest = [
            *_order_by_speedup(ahead, by_id, confidence, host.isa_class, bound),
            *reference,
            *_order_by_speedup(behind, by_id, confidence, host.isa_class, bound),
        ]
    ordered = [*first, *deferred, *rest]
    for c in ordered:
        if c.id in order:
            c.reason += "; listed in the selection order"
        if c.speedup is not None:
            a = by_id.get(c.id)
            gpu = a is not None and a.requirements is not None and a.requirements.gpu
            like = host.gpus[0].name if gpu and host.gpus else host.isa_class
            c.reason += (
                f"; speedup {c.speedup.describe()} over the reference "
                f"({c.latency_source} record, a host like this: {like})"
            )
        elif c.prior:
            c.reason += c.prior
        elif c.id != REFERENCE and by_id[c.id].status != "deferred":
            c.reason += "; no speedup measured on a host like this"
    return ordered, excluded


def select_order(manifest: Manifest, host: HostInfo | None = None) -> SelectionRecord:
    """What `host` (default: this build host) would pick, recorded in the manifest
    (informational)."""
    host = host or probe_host()
    ok, excluded = rank(manifest, host)
    return SelectionRecord(
        host=host.describe(),
        order=[SelectionChoice(id=c.id, why=c.reason) for c in ok],
        excluded=[SelectionChoice(id=c.id, why=c.reason) for c in excluded],
    )
