"""Typed exceptions. Every message names the file, node or artifact at fault and what to do.

The CLI prints `error: <message>` and exits non-zero for any `CompilePkgError`; anything
else escaping a backend is wrapped into one of these at the node or runner boundary.
"""

from __future__ import annotations

import signal

__all__ = [
    "BackendUnavailable",
    "NotApplicable",
    "BuildError",
    "CompilePkgError",
    "ConfigError",
    "ContractError",
    "InputModelError",
    "IntegrityError",
    "NoCompatibleArtifact",
    "PackageError",
    "PassError",
    "Terminated",
    "short_message",
]


class CompilePkgError(Exception):
    """Base of every error compile-pkg raises on purpose."""

    exit_code = 1


class InputModelError(CompilePkgError):
    """The source model cannot be read, checked or exported."""

    exit_code = 2


class ConfigError(CompilePkgError):
    """The config file or a --set override is invalid."""

    exit_code = 2


class ContractError(CompilePkgError):
    """Inputs given at run time do not match the package's interface contract."""

    exit_code = 2


class PassError(CompilePkgError):
    """A graph pass failed on this model."""


class BuildError(CompilePkgError):
    """A backend failed to compile an artifact."""


class BackendUnavailable(CompilePkgError):
    """A backend (library or hardware) is missing on this host, or cannot run this artifact
    here (`what`: the runtime is there but refuses it, e.g. no kernel for it on this CPU);
    serving then tries the next artifact either way."""

    def __init__(
        self, backend: str, reason: str, install: str = "", what: str = "unavailable"
    ) -> None:
        self.backend = backend
        self.reason = reason
        self.install = install
        self.what = what
        hint = f"; to get it: {install}" if install else ""
        super().__init__(f"{backend} {what}: {reason}{hint}")

    def __reduce__(self) -> tuple[type, tuple[str, str, str, str]]:
        # pickle rebuilds an exception from its args (the message alone): a worker process
        # or Ray hands it back whole
        return type(self), (self.backend, self.reason, self.install, self.what)


class NotApplicable(CompilePkgError):
    """A pass or variant that does not apply to this model (an int8 pass on a model that is
    already quantized): its artifact is skipped with the reason, not failed."""


class PackageError(CompilePkgError):
    """A package directory or archive is malformed."""

    exit_code = 3


class IntegrityError(PackageError):
    """An artifact file is missing or its sha256 does not match the manifest."""


class NoCompatibleArtifact(CompilePkgError):
    """No artifact in the package can be loaded on this host."""

    exit_code = 4


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a timeout, a cancelled CI job, a closed terminal), raised by the
    CLI's handler where Python runs, so a command stops as on Ctrl-C: workers killed, scratch
    and temporary files removed, the output left as it was (packages are written by an atomic
    rename). Not an error of the model or config, so not a CompilePkgError."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    def __reduce__(self) -> tuple[type, tuple[int]]:
        return type(self), (self.signum,)


def short_message(exc: BaseException, limit: int = 500) -> str:
    """One line for a log or a record: our own errors as they are, a library's with its type.

    Backends raise multi-line messages with C++ traces; whitespace is folded and the text cut
    at `limit` characters.
    """
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[:limit] + "..."
    return text if isinstance(exc, CompilePkgError) else f"{type(exc).__name__}: {text}"
