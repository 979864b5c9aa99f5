"""Serving: load a package and pick the artifact that fits this host, with a fallback chain.

`load()` reads and validates the manifest (its core recomputed), verifies the package's
signatures against the trust policy, checks the whole closed file set (every file listed and
matching its sha256, nothing unlisted, no links or special files), ranks artifacts
(compiler/serving/selection.py) and narrows them to what the caller asked for
(compiler/serving/request.py). Each candidate's files are copied into a private folder while
hashed and the runtime loads that copy; a runtime that fails to load is recorded and the next
candidate tried. An integrity failure is an error (fail closed) unless the caller passes
`integrity="fallback"`: then it is logged, recorded on the session, and the damaged artifacts
are skipped. Native code (TVM libraries, prebuilt TensorRT engines) loads only from a package
signed by a trusted key, unless the trust policy allows unsigned native code.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from compiler.core.contract import Contract
from compiler.core.errors import IntegrityError, NoCompatibleArtifact, PackageError, short_message
from compiler.core.host import HostInfo, probe_host
from compiler.core.parity import SCORES_FILE
from compiler.core.records import tuned_runtime
from compiler.serving.archive import extract_package, is_archive
from compiler.serving.deferred import DeferredSwitch, ParityGate, order_deferred
from compiler.serving.integrity import FileProblem, VerifiedCopy, check_files, check_package
from compiler.serving.manifest import ArtifactEntry, Manifest, read_manifest
from compiler.serving.request import Request
from compiler.serving.selection import REFERENCE, REFERENCE_MODEL, Candidate, rank
from compiler.serving.session import Decision, Session
from compiler.serving.signing import SignatureStatus, TrustPolicy, check_signatures, native_refusal
from compiler.serving.verify_records import default_records_path, read_verify_records
from targets.runner import Runner, SwitchingRunner, open_runner, reference_runner

__all__ = ["Decision", "IntegrityMode", "Session", "check_files", "load"]

log = logging.getLogger("compile_pkg.loader")

IntegrityMode = Literal["strict", "fallback"]
# the reference's sample data (compiler/packaging/assemble.py), which serving its model
# does not need
_DATA = frozenset({"inputs.npz", "outputs.npz", "labels.json", SCORES_FILE})


def _open_source(path: Path, workdir: Path | None) -> tuple[Path, Path | None]:
    """(package folder, private folder to remove at close): a folder, or a packed archive
    extracted safely into a private folder."""
    if path.is_dir():
        return path, None
    if not is_archive(path):
        raise PackageError(f"{path}: not a package folder or a .tar.gz made by compile-pkg pack")
    tmp = Path(tempfile.mkdtemp(prefix="compile-pkg-unpacked-", dir=workdir))
    try:
        return extract_package(path, tmp), tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class _Loading:
    """One load() call's state: what was found, decided and opened so far."""

    def __init__(
        self, source: Path, root: Path, manifest: Manifest, integrity: IntegrityMode
    ) -> None:
        self.source, self.root, self.manifest, self.integrity = source, root, manifest, integrity
        self.unpacked: Path | None = None  # set when `source` is an archive extracted here
        self.workdir: Path | None = None  # where verified copies go (None: the temp folder)
        self.decisions: list[Decision] = []
        self.integrity_failures: list[str] = []
        self.damaged: dict[str, str] = {}  # artifact id -> its integrity problem
        self.copies: list[VerifiedCopy] = []

    def integrity_failure(self, what: str, exc: IntegrityError | None = None) -> None:
        """Raise in strict mode; in fallback mode log it and keep it for the session."""
        if self.integrity == "strict":
            raise exc or IntegrityError(what)
        log.warning("integrity failure (integrity='fallback', going on): %s", what)
        self.integrity_failures.append(what)

    def check_files(self) -> None:
        check = check_package(self.root, self.manifest)
        if check.ok:
            return
        if self.integrity == "strict":
            raise check.error()
        by_artifact: dict[str, list[FileProblem]] = {}
        for p in check.problems:
            by_artifact.setdefault(p.artifact, []).append(p)
        for aid, problems in by_artifact.items():
            what = "; ".join(str(p) for p in problems[:3])
            self.integrity_failure(f"{aid or 'package'}: {what}")
            if aid:
                self.damaged[aid] = f"integrity: {what}"

    def signatures(self, trust: TrustPolicy) -> SignatureStatus:
        try:
            return check_signatures(self.root, self.manifest, trust)
        except IntegrityError as exc:
            self.integrity_failure(str(exc), exc)
            return SignatureStatus()  # treated as unsigned from here on

    def close(self) -> None:
        for c in self.copies:
            c.close()


def artifact_contract(contract: Contract, a: ArtifactEntry) -> Contract:
    """What `a` accepts: `contract`, with the dims a fixed-shape artifact pins pinned."""
    if a.contract is None:
        return contract
    pinned = {k: r for k, r in a.contract.dims.items() if r.min == r.max}
    return contract.model_copy(update={"dims": {**contract.dims, **pinned}})


def _open(
    state: _Loading,
    c: Candidate,
    contract: Contract,
    threads: int | None,
    cache_dir: Path | None,
    host: HostInfo,
) -> tuple[Runner | None, str]:
    """The candidate's runner, loaded from a verified private copy (None if it failed), and
    why its runtime settings are the build's tuned ones or the core's ("" without a sweep)."""
    if c.id == REFERENCE:
        return _open_reference(state, contract, threads)
    a = state.manifest.artifact(c.id)
    try:
        copy = VerifiedCopy(state.root, a, state.workdir)
    except IntegrityError as exc:
        state.integrity_failure(str(exc), exc)
        state.decisions.append(Decision(c.id, "failed", f"integrity: {exc}"))
        return None, ""
    state.copies.append(copy)
    assert a.runtime is not None  # a built artifact has runtime settings (manifest validation)
    served = artifact_contract(contract, a)
    measured = state.manifest.measurements.get(a.id)
    runtime, settings_why = tuned_runtime(a.runtime, measured.latency if measured else [], host)
    runner = open_runner(
        a.backend, copy.artifact_dir, runtime, served, threads=threads, cache_dir=cache_dir
    )
    try:
        runner.load()
    except Exception as exc:  # any failure to load: record it, the caller falls back
        reason = short_message(exc, 300)
        log.warning("%s failed to load: %s; trying the next artifact", c.id, reason)
        state.decisions.append(Decision(c.id, "failed", reason))
        if runner.build_job is not None:
            return runner, settings_why  # its engine builds in the background from this copy
        state.copies.remove(copy)
        copy.close()
        return None, ""
    return runner, settings_why


def _open_reference(
    state: _Loading, contract: Contract, threads: int | None
) -> tuple[Runner | None, str]:
    """The package's reference model, from a verified private copy, as it was timed: ONNX
    Runtime CPU with default settings (None if it failed to load)."""
    files = [f for f in state.manifest.reference.files if f.path.rsplit("/", 1)[-1] not in _DATA]
    try:
        copy = VerifiedCopy(state.root, state.manifest.reference, state.workdir, files=files)
    except IntegrityError as exc:
        state.integrity_failure(str(exc), exc)
        state.decisions.append(Decision(REFERENCE, "failed", f"integrity: {exc}"))
        return None, ""
    state.copies.append(copy)
    runner = reference_runner(
        copy.artifact_dir / REFERENCE_MODEL.rsplit("/", 1)[1], contract, threads=threads or 0
    )
    try:
        runner.load()
    except Exception as exc:  # the last fallback: say why it failed too
        state.decisions.append(Decision(REFERENCE, "failed", short_message(exc, 300)))
        state.copies.remove(copy)
        copy.close()
        return None, ""
    return runner, ""


def load(
    package_path: str | Path,
    *,
    target: str | None = None,
    backend: str | None = None,
    precision: str | None = None,
    require: list[str] | None = None,
    order: list[str] | None = None,
    allow_unverified: bool = False,
    trust: TrustPolicy | None = None,
    integrity: IntegrityMode = "strict",
    use_verify_records: bool = False,
    verify_records: str | Path | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    host: HostInfo | None = None,
    workdir: str | Path | None = None,
) -> Session:
    """Load the best artifact of `package_path` (a package folder or a `.tar.gz`) for this host.

    target, backend, precision: only artifacts with these. require: only these artifact ids,
    tried in this order (NoCompatibleArtifact with each one's reason if none loads). order:
    ids to try first. An id the package lacks is a ConfigError. allow_unverified: also
    artifacts whose parity was not verified (never ones that failed). trust: the signers
    trusted for native code (default `$COMPILE_PKG_TRUSTED_KEYS`). integrity: "strict" (an
    integrity failure raises IntegrityError) or "fallback" (logged, recorded on the session,
    damaged artifacts skipped). use_verify_records: rank with `compile-pkg verify`'s records
    too (`verify_records`, default `<package>.verify.json`). cache_dir: where runtimes keep
    compiled caches; workdir: where private copies go (default: the temp folder).
    """
    source = Path(package_path)
    work = Path(workdir) if workdir else None
    request = Request(
        target,
        backend,
        precision,
        tuple(require) if require is not None else None,
        tuple(order) if order is not None else None,
    )
    root, unpacked = _open_source(source, work)
    state: _Loading | None = None
    try:
        manifest = read_manifest(root)
        request.check(manifest)
        state = _Loading(source, root, manifest, integrity)
        state.unpacked, state.workdir = unpacked, work
        trust = trust or TrustPolicy.from_env()
        signatures = state.signatures(trust)
        state.check_files()
        host = host or probe_host()
        records = None
        if use_verify_records:
            path = Path(verify_records) if verify_records else default_records_path(source)
            if verify_records or path.is_file():
                records = read_verify_records(path, manifest.core_sha256).measurements
        candidates, excluded = rank(
            manifest,
            host,
            order=request.preferred(),
            allow_unverified=allow_unverified,
            use_verify_records=use_verify_records,
            verify_records=records,
        )
        state.decisions += [Decision(c.id, "excluded", c.reason) for c in excluded]
        return _pick(state, request, candidates, signatures, trust, host, threads, cache_dir)
    except BaseException:
        if state is not None:
            state.close()
        if unpacked is not None:
            shutil.rmtree(unpacked, ignore_errors=True)
        raise


def _pick(
    state: _Loading,
    request: Request,
    candidates: list[Candidate],
    signatures: SignatureStatus,
    trust: TrustPolicy,
    host: HostInfo,
    threads: int | None,
    cache_dir: str | Path | None,
) -> Session:
    m = state.manifest
    # the config's ranges are enforced; a probed one was only tried so far, but a step is a
    # size the reference was seen to reject (and equal_dims are checked as they are)
    dims = {
        k: v if k in m.configured_dims else v.step_only()
        for k, v in m.contract.dims.items()
        if k in m.configured_dims or v.step > 1
    }
    contract = m.contract.model_copy(update={"dims": dims})
    pending: Runner | None = None  # a runner whose TensorRT engine builds in the background
    pending_id = ""
    unwanted = {
        c.id: request.reference_mismatch()
        if c.id == REFERENCE
        else request.mismatch(m.artifact(c.id))
        for c in candidates
    }
    state.decisions += [Decision(aid, "excluded", why) for aid, why in unwanted.items() if why]
    for c in order_deferred(
        [c for c in candidates if not unwanted[c.id]], m, request.preferred() or ()
    ):
        a = None if c.id == REFERENCE else m.artifact(c.id)
        skip = a is not None and (state.damaged.get(a.id) or native_refusal(a, signatures, trust))
        if not skip and pending is not None and a is not None and a.status == "deferred":
            skip = f"not started: {pending_id}'s engine builds first (one build at a time)"
        if skip:
            state.decisions.append(Decision(c.id, "excluded", skip))
            continue
        runner, settings_why = _open(
            state, c, contract, threads, Path(cache_dir) if cache_dir else None, host
        )
        if runner is None:
            continue
        if runner.build_job is not None:  # its engine builds in the background: serve the next
            if pending is None:
                pending, pending_id = runner, c.id
            continue
        serving: Runner | SwitchingRunner = runner
        if pending is not None:  # serve this one until the engine is built and passes parity
            serving = DeferredSwitch(runner, pending, ParityGate(state.root, m, pending_id))
        why = "; ".join(p for p in (request.why(c.id), c.reason, settings_why) if p)
        tried = sum(d.outcome == "failed" for d in state.decisions)
        why += f" (after {tried} fallback(s))" if tried else ""
        state.decisions.append(Decision(c.id, "picked", why))
        _warn_unusable(request, state.decisions)
        log.info("picked %s for %s: %s", c.id, host.describe(), why)  # names the ISA class
        return Session(
            package=state.source,
            manifest=m,
            artifact=c.id,
            reason=why,
            host=host,
            decisions=state.decisions,
            contract=artifact_contract(contract, a) if a is not None else contract,
            signatures=signatures.describe(),
            integrity_failures=state.integrity_failures,
            runner=serving,
            copies=state.copies,
            unpacked=state.unpacked,
        )
    _warn_unusable(request, state.decisions)
    lines = "\n".join(f"  {d.artifact}: {d}" for d in state.decisions) or "  (no artifacts)"
    what = (
        f"the request ({request.describe()}) cannot be met"
        if request.describe() != Request().describe()
        else "no artifact can be loaded"
    )
    raise NoCompatibleArtifact(f"{state.root}: {what} on this host ({host.describe()}):\n{lines}")


def _warn_unusable(request: Request, decisions: list[Decision]) -> None:
    """Say which ids of the caller's order could not be used, and why (never silently)."""
    for aid in request.order or ():
        why = next((d for d in decisions if d.artifact == aid), None)
        if why is not None and why.outcome != "picked":
            log.warning("order: %s could not be used: %s", aid, why)
