"""Signed packages: ed25519 signatures (the `cryptography` library) over the manifest's core,
and the trust policy serving checks them against.

A signature covers a small statement: the package's name and version and its `core_sha256`,
which pins the contract, the config, the provenance and every artifact and reference file by
sha256. Measurements, selection and reports are run-to-run records and not signed (they are
hashed like every file). Signatures live in `signatures.json` beside `manifest.json`.

Native code (a TVM shared library, a prebuilt TensorRT engine) is loaded only from a package
signed by a trusted key, unless the caller explicitly allows unsigned native code. Trusted
keys come from the caller (`TrustPolicy.from_files`) or `$COMPILE_PKG_TRUSTED_KEYS` (files or
folders of public keys, separated by `:`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compiler.core.errors import IntegrityError, PackageError
from compiler.core.hashing import canonical_json
from compiler.serving.integrity import SIGNATURES_FILE, check_package
from compiler.serving.manifest import ArtifactEntry, Manifest, Sha256, read_manifest

__all__ = [
    "INSTALL",
    "SignatureRecord",
    "SignatureStatus",
    "TrustPolicy",
    "TrustedKey",
    "check_signatures",
    "generate_key",
    "load_public_key",
    "native_code",
    "native_refusal",
    "read_signatures",
    "sign_package",
]

INSTALL = "pip install 'compile-pkg[signing]' (the cryptography library)"
STATEMENT_TYPE: Literal["compile-pkg.core/1"] = "compile-pkg.core/1"
PASSWORD_ENV = "COMPILE_PKG_SIGNING_KEY_PASSWORD"
TRUSTED_KEYS_ENV = "COMPILE_PKG_TRUSTED_KEYS"


@dataclass(frozen=True)
class _Crypto:
    ed25519: Any
    serialization: Any
    InvalidSignature: type[Exception]


def _crypto() -> _Crypto:
    """The parts of `cryptography` used here (an optional extra: imported when needed)."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise PackageError(f"signatures need the cryptography library: {INSTALL}") from exc
    return _Crypto(ed25519, serialization, InvalidSignature)


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Statement(_M):
    """What a signature promises: this package name and version has exactly this core."""

    type: Literal["compile-pkg.core/1"] = STATEMENT_TYPE
    package: str
    version: str
    core_sha256: Sha256


class SignatureRecord(_M):
    key_id: str  # first 16 hex digits of the sha256 of the raw public key
    signer: str = ""  # a name the signer gave; informational
    algorithm: Literal["ed25519"] = "ed25519"
    public_key: str  # base64 of the raw 32-byte key
    statement: Statement
    signature: str  # base64 of the 64-byte signature over the canonical JSON of `statement`
    signed_at: str = ""  # informational, not signed


class SignatureFile(_M):
    signatures: list[SignatureRecord] = Field(default_factory=list)


def key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    public_key: bytes  # raw 32 bytes
    source: str  # where it was read from


@dataclass(frozen=True)
class TrustPolicy:
    """Which signers serving trusts, and whether unsigned native code may load anyway."""

    keys: tuple[TrustedKey, ...] = ()
    allow_unsigned_native: bool = False

    @classmethod
    def from_files(
        cls, paths: Iterable[str | Path], *, allow_unsigned_native: bool = False
    ) -> TrustPolicy:
        """Public keys from files (PEM or OpenSSH `ssh-ed25519`) or folders of them."""
        keys: list[TrustedKey] = []
        for p in map(Path, paths):
            files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
            keys += [load_public_key(f) for f in files]
        return cls(tuple(keys), allow_unsigned_native)

    @classmethod
    def from_env(cls, *, allow_unsigned_native: bool = False) -> TrustPolicy:
        value = os.environ.get(TRUSTED_KEYS_ENV, "")
        paths = [p for p in value.split(os.pathsep) if p]
        return cls.from_files(paths, allow_unsigned_native=allow_unsigned_native)

    def trusts(self, kid: str) -> TrustedKey | None:
        return next((k for k in self.keys if k.key_id == kid), None)


@dataclass(frozen=True)
class SignatureStatus:
    """Who signed the package's core: signers the policy trusts and others (both verified)."""

    trusted: tuple[str, ...] = ()
    untrusted: tuple[str, ...] = ()
    unchecked: str = ""  # why signatures present could not be checked (treated as unsigned)

    @property
    def trusted_signed(self) -> bool:
        return bool(self.trusted)

    def describe(self) -> str:
        if self.unchecked:
            return f"signatures not checked: {self.unchecked}"
        if not self.trusted and not self.untrusted:
            return "unsigned"
        parts = [f"signed by {s} (trusted)" for s in self.trusted]
        parts += [f"signed by {s} (not a trusted key)" for s in self.untrusted]
        return "; ".join(parts)


def load_public_key(path: Path) -> TrustedKey:
    c = _crypto()
    ed25519, serialization = c.ed25519, c.serialization
    try:
        data = path.read_bytes()
        if data.startswith(b"ssh-ed25519"):
            key = serialization.load_ssh_public_key(data)
        else:
            key = serialization.load_pem_public_key(data)
    except (OSError, ValueError, TypeError) as exc:
        raise PackageError(f"{path}: not a readable public key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise PackageError(f"{path}: not an ed25519 public key ({type(key).__name__})")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return TrustedKey(key_id(raw), raw, str(path))


def generate_key(private_path: Path, public_path: Path) -> str:
    """Write a new ed25519 key pair (PEM; the private key mode 0600); return its key id."""
    c = _crypto()
    ed25519, serialization = c.ed25519, c.serialization
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub = key.public_key()
    public_path.write_bytes(
        pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_id(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def read_signatures(package: Path) -> list[SignatureRecord]:
    path = package / SIGNATURES_FILE
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return SignatureFile.model_validate(doc).signatures
    except (OSError, ValueError, RecursionError) as exc:
        first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise PackageError(f"{path}: unreadable signatures ({first})") from None


def _verify_one(rec: SignatureRecord, m: Manifest, policy: TrustPolicy, where: Path) -> bool:
    """True for a trusted signer; IntegrityError when the signature does not hold."""
    c = _crypto()
    s = rec.statement
    who = f"{rec.signer or 'key'} {rec.key_id}"
    if (s.core_sha256, s.package, s.version) != (m.core_sha256, m.package.name, m.package.version):
        raise IntegrityError(
            f"{where}: the signature by {who} covers another core or package version; the "
            "package changed after it was signed (re-sign it if the change is yours)"
        )
    try:
        raw = base64.b64decode(rec.public_key, validate=True)
        sig = base64.b64decode(rec.signature, validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError(f"{where}: the signature by {who} is not valid base64") from None
    trusted = policy.trusts(rec.key_id)
    if key_id(raw) != rec.key_id or (trusted is not None and trusted.public_key != raw):
        raise IntegrityError(f"{where}: the signature by {who} names another key than it holds")
    try:
        c.ed25519.Ed25519PublicKey.from_public_bytes(raw).verify(
            sig, canonical_json(s.model_dump(mode="json")).encode()
        )
    except (c.InvalidSignature, ValueError):
        raise IntegrityError(
            f"{where}: the signature by {who} does not verify (tampered or corrupted)"
        ) from None
    return trusted is not None


def check_signatures(package: Path, m: Manifest, policy: TrustPolicy) -> SignatureStatus:
    """Verify every signature of the package; IntegrityError if any does not hold."""
    trusted: list[str] = []
    untrusted: list[str] = []
    records = read_signatures(package)
    if records:
        try:
            _crypto()
        except PackageError as exc:  # hashes still protect the package; native code is refused
            return SignatureStatus(unchecked=str(exc))
    for rec in records:
        name = f"{rec.signer} ({rec.key_id})" if rec.signer else rec.key_id
        is_trusted = _verify_one(rec, m, policy, package / SIGNATURES_FILE)
        (trusted if is_trusted else untrusted).append(name)
    return SignatureStatus(tuple(trusted), tuple(untrusted))


def _private_key(path: Path) -> Any:
    c = _crypto()
    ed25519, serialization = c.ed25519, c.serialization
    password = os.environ.get(PASSWORD_ENV)
    try:
        key = serialization.load_pem_private_key(
            path.read_bytes(), password.encode() if password else None
        )
    except (OSError, ValueError, TypeError) as exc:
        raise PackageError(
            f"{path}: not a readable private key ({exc}); an encrypted key reads its password "
            f"from ${PASSWORD_ENV}"
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise PackageError(f"{path}: not an ed25519 private key ({type(key).__name__})")
    return key


def sign_package(package: Path, key_path: Path, signer: str = "") -> SignatureRecord:
    """Sign `package`'s core with the private key at `key_path` (after checking every file
    against the manifest: a tampered package is never signed); replaces this key's signature."""
    serialization = _crypto().serialization
    m = read_manifest(package)
    check_package(package, m).raise_if_bad()
    key = _private_key(key_path)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    statement = Statement(
        package=m.package.name, version=m.package.version, core_sha256=m.core_sha256
    )
    sig = key.sign(canonical_json(statement.model_dump(mode="json")).encode())
    rec = SignatureRecord(
        key_id=key_id(raw),
        signer=signer,
        public_key=base64.b64encode(raw).decode(),
        statement=statement,
        signature=base64.b64encode(sig).decode(),
        signed_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    kept = [r for r in read_signatures(package) if r.key_id != rec.key_id]
    doc = SignatureFile(signatures=[*kept, rec]).model_dump(mode="json")
    tmp = package / f".{SIGNATURES_FILE}.tmp"
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, package / SIGNATURES_FILE)
    return rec


def native_code(a: ArtifactEntry) -> str:
    """What native code loading `a` runs (a TVM library, a prebuilt TensorRT engine); ''."""
    if a.runtime is None:
        return ""
    if a.runtime.backend == "tvm":
        return f"a TVM shared library ({a.runtime.library})"
    if a.runtime.backend == "tensorrt" and a.runtime.engine:
        return f"a prebuilt TensorRT engine ({a.runtime.engine})"
    return ""


def native_refusal(a: ArtifactEntry, status: SignatureStatus, policy: TrustPolicy) -> str:
    """Why `a` may not load under `policy` ('' when it may)."""
    what = native_code(a)
    if not what or status.trusted_signed or policy.allow_unsigned_native:
        return ""
    if status.unchecked:
        signed = f"not checked for signatures ({status.unchecked})"
    elif status.untrusted:
        signed = f"signed only by keys that are not trusted ({', '.join(status.untrusted)})"
    else:
        signed = "unsigned"
    return (
        f"refused: {what} is native code and the package is {signed}; sign it "
        f"(compile-pkg sign PKG --key KEY) and trust the key (${TRUSTED_KEYS_ENV} or "
        "load(trust=...)), or allow unsigned native code explicitly"
    )
