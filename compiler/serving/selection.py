"""Rank a package's artifacts for a host: compatible, parity passed, then fastest measured.

Used by the loader at load time (with the serving host) and at build time to record what
the build host would pick. A quantized (int8) artifact that is not faster than the best
float artifact of the same target by the configured margin is ranked after it, with the
measured ratio as the reason: int8 that buys nothing should not cost accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.core.host import HostInfo, probe_host
from compiler.serving.manifest import ArtifactEntry, Manifest, SelectionChoice, SelectionRecord

__all__ = ["Candidate", "parity_verdict", "best_latency", "rank", "select_order"]


@dataclass
class Candidate:
    id: str
    ok: bool
    reason: str
    p50_ms: float | None = None


def parity_verdict(manifest: Manifest, aid: str) -> tuple[str, str]:
    """('passed'|'failed'|'not-verified', how) from the latest decisive parity record."""
    records = manifest.measured(aid).parity
    for rec in reversed(records):
        if rec.decisive:
            host = rec.host
            where = f"{rec.mode} on {host.arch if host else '?'}" + (
                f" ({host.emulated})" if host and host.emulated else ""
            )
            return rec.status, where
    return "not-verified", records[-1].reason if records else "no parity record"


def best_latency(manifest: Manifest, a: ArtifactEntry, host: HostInfo | None) -> float | None:
    """Lowest p50 among native latency records on a host like `host` (same arch and CPU or GPU)."""
    best = None
    for rec in manifest.measured(a.id).latency:
        h = rec.host
        if h.emulated:
            continue
        if host is not None:
            if h.arch != host.arch:
                continue
            if a.requirements and a.requirements.gpu:
                names = {g.name for g in host.gpus}
                if not any(g.name in names for g in h.gpus):
                    continue
        p50 = rec.artifact.p50_ms
        if best is None or p50 < best:
            best = p50
    return best


def _quantized(a: ArtifactEntry) -> bool:
    return a.precision == "int8"


def rank(
    manifest: Manifest,
    host: HostInfo,
    *,
    order: list[str] | None = None,
    allow_unverified: bool = False,
    quantized_min_speedup: float | None = None,
) -> tuple[list[Candidate], list[Candidate]]:
    """(candidates in the order to try, excluded with reasons)."""
    policy = manifest.policy.selection
    margin = quantized_min_speedup or policy.quantized_min_speedup
    order = order if order is not None else policy.order
    ok: list[Candidate] = []
    excluded: list[Candidate] = []
    for a in manifest.artifacts:
        if a.status not in ("built", "deferred"):
            excluded.append(Candidate(a.id, False, f"{a.status}: {a.reason}"))
            continue
        if a.requirements is None:
            excluded.append(Candidate(a.id, False, "incompatible: no requirements recorded"))
            continue
        why = a.requirements.mismatches(host)
        if why:
            excluded.append(
                Candidate(a.id, False, "incompatible: " + "; ".join(m.message for m in why))
            )
            continue
        verdict, how = parity_verdict(manifest, a.id)
        if a.status == "deferred" and verdict != "failed":
            # built on this host at first load (TensorRT); the loader serves the next
            # candidate until it is ready, so it must come first to be started at all
            ok.append(
                Candidate(
                    a.id,
                    True,
                    "deferred build: the engine is built on this host at "
                    "first load; its parity is not yet verified here",
                    None,
                )
            )
            continue
        if verdict == "failed":
            excluded.append(Candidate(a.id, False, f"parity failed ({how})"))
            continue
        if verdict == "not-verified" and not allow_unverified:
            excluded.append(Candidate(a.id, False, f"parity not verified: {how}"))
            continue
        p50 = best_latency(manifest, a, host)
        ok.append(Candidate(a.id, True, f"parity {verdict} ({how})", p50))
    by_id = {a.id: a for a in manifest.artifacts}
    float_best: dict[str, float] = {}
    for c in ok:
        a = by_id[c.id]
        if not _quantized(a) and c.p50_ms is not None:
            float_best[a.target] = min(float_best.get(a.target, c.p50_ms), c.p50_ms)

    def score(c: Candidate) -> tuple[int, int, float]:
        explicit = order.index(c.id) if c.id in order else len(order)
        a = by_id[c.id]
        if a.status == "deferred":
            return (explicit, -1, 0.0)
        p50 = c.p50_ms if c.p50_ms is not None else float("inf")
        demote = 0
        fb = float_best.get(a.target)
        if _quantized(a) and fb is not None and c.p50_ms is not None and fb / c.p50_ms < margin:
            demote = 1
            c.reason += (
                f"; int8 only {fb / c.p50_ms:.2f}x the best float artifact "
                f"(< {margin}x): float preferred"
            )
            p50 = fb + 1e-9 + p50
        return (explicit, demote, p50)

    ok.sort(key=score)
    for c in ok:
        c.reason += (
            f"; p50 {c.p50_ms:.3f} ms on a host like this"
            if c.p50_ms is not None
            else "; no latency measured on a host like this"
        )
    return ok, excluded


def select_order(manifest: Manifest) -> SelectionRecord:
    """What the build host would pick, recorded in the manifest (informational)."""
    host = probe_host()
    ok, excluded = rank(manifest, host)
    return SelectionRecord(
        host=host.describe(),
        order=[SelectionChoice(id=c.id, why=c.reason) for c in ok],
        excluded=[SelectionChoice(id=c.id, why=c.reason) for c in excluded],
    )
