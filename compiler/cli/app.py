"""The `compile-pkg` command group, its output conventions and `main` (exit codes below).

`compile-pkg MODEL --targets gpu,cpu,arm -o OUT` builds (the `build` subcommand is implied
when the first word is an existing file, an `.onnx` path or `package.module:factory`);
`inspect`, `verify`, `run`, `pack`, `compare` and `schema` work on packages and configs.

Output contract, the same for every command: stdout carries only the command's result (a
table, or with `--json` one JSON document whose shape `compile-pkg schema COMMAND` prints);
logs, progress, warnings and errors go to stderr, never hard-wrapped; `-q` keeps only warnings
and errors there, `-v` adds details. A reader that stops early (`| head -1`) is not an error.
Exit codes: 0 success; 1 a build or run failed; 2 bad input or config; 3 bad package;
4 nothing loadable here; 70 internal error; 130 Ctrl-C, 128 + N signal N (SIGTERM, SIGHUP),
each after the cleanup.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import click
from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.text import Text

from compiler.core.errors import CompilePkgError, ConfigError, Terminated
from compiler.core.files import default_cache_root, process_scratch
from compiler.core.targets import check_targets
from compiler.serving.signing import TrustPolicy

__all__ = [
    "trust_options",
    "trust_policy",
    "JSON_DOCS",
    "ErrorDoc",
    "JsonDoc",
    "cli",
    "console",
    "detail",
    "echo_result",
    "emit_json",
    "json_doc",
    "main",
    "out_console",
    "output_options",
    "parse_targets",
    "say",
    "ui",
    "warn",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_D = TypeVar("_D", bound="JsonDoc")


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


class _Stdout(Console):
    """The result console: a reader that closed the pipe has what it wanted, exit 0."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _silence_stdout()
        raise SystemExit(0)


# soft_wrap: a message is one line however narrow the terminal or pipe (rich wraps at 80
# columns when stderr is not a terminal); markup off, so `[...]` in a message stays as is
console = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)
# tables stay readable when piped (rich would fall back to 80 columns)
out_console = _Stdout(width=None if sys.stdout.isatty() else 160, highlight=False)


@dataclass
class Ui:
    """How much goes to stderr and whether the result is JSON; set by `output_options`."""

    level: Literal[-1, 0, 1] = 0  # -1: -q, 0: default, 1: -v
    json: bool = False
    command: str = ""

    def reset(self) -> None:
        self.level, self.json, self.command = 0, False, ""


ui = Ui()


def say(message: str, style: str | None = None) -> None:
    """A log line on stderr (not under -q)."""
    if ui.level >= 0:
        console.print(Text(message, style=style or ""))


def detail(message: str, style: str | None = "dim") -> None:
    """A log line on stderr only under -v."""
    if ui.level >= 1:
        console.print(Text(message, style=style or ""))


def warn(message: str) -> None:
    """A warning on stderr, shown even under -q."""
    console.print(Text.assemble(("warning: ", "bold yellow"), message))


# --------------------------------------------------------------------------- --json documents


class JsonDoc(BaseModel):
    """Base of every `--json` document: `command` and `schema_version` name its shape, which
    `compile-pkg schema COMMAND` prints as JSON Schema. A field is never renamed or retyped
    within a schema version; new fields may appear."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    command: str


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    message: str
    exit_code: int


class ErrorDoc(JsonDoc):
    """What `--json` prints on stdout when the command fails with a known error."""

    ok: Literal[False] = False
    error: ErrorInfo


JSON_DOCS: dict[str, type[JsonDoc]] = {}


def json_doc(cls: type[_D]) -> type[_D]:
    """Register a `--json` document class under its `command` default (for `schema`)."""
    fields: dict[str, Any] = dict(cls.model_fields)
    JSON_DOCS[str(fields["command"].default)] = cls
    return cls


def echo_result(text: str) -> None:
    """Write `text` (the command's result) to stdout. A reader that closed the pipe early
    (`| head -1`) has what it wanted: exit 0 (click itself would exit 1)."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        raise SystemExit(0) from None


def emit_json(doc: JsonDoc) -> None:
    """Print `doc` as the command's result on stdout: one JSON document, nothing else."""
    echo_result(doc.model_dump_json(indent=2) + "\n")


def _set_level(level: Literal[-1, 1]) -> Callable[[click.Context, click.Parameter, bool], None]:
    def set_level(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if not value:
            return
        if ui.level not in (0, level):
            raise click.UsageError("-q and -v exclude each other", ctx)
        ui.level = level
        if level > 0:
            _log_to_stderr()

    return set_level


def _log_to_stderr() -> None:
    """Under -v, our own modules' info lines (the scheduler's waits for memory, the cache's
    notes) reach stderr; third-party loggers keep their levels."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    for name in ("compiler", "passes", "targets"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    ui.json = ui.json or value
    ui.command = ctx.info_name or ""


def output_options(with_json: bool = True) -> Callable[[_F], _F]:
    """`-q`/`-v` (and `--json`) for a command; they set `ui`."""

    def decorate(f: _F) -> _F:
        f = click.option(
            "-v",
            "--verbose",
            is_flag=True,
            expose_value=False,
            callback=_set_level(1),
            help="more detail on stderr (per-node reasons, third-party output)",
        )(f)
        f = click.option(
            "-q",
            "--quiet",
            is_flag=True,
            expose_value=False,
            callback=_set_level(-1),
            help="only warnings and errors on stderr",
        )(f)
        if with_json:
            f = click.option(
                "--json",
                "as_json",
                is_flag=True,
                expose_value=False,
                callback=_set_json,
                help="print the result as one JSON document (shape: compile-pkg schema COMMAND)",
            )(f)
        return f

    return decorate


# --------------------------------------------------------------------------- the group

# package.module:factory, the form a torch source takes
_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def looks_like_model(word: str) -> bool:
    """Whether an unknown first word is a model to build rather than a mistyped command."""
    return Path(word).exists() or word.endswith(".onnx") or bool(_FACTORY.fullmatch(word))


class _DefaultBuild(click.Group):
    """`compile-pkg MODEL ...` is `compile-pkg build MODEL ...`; any other unknown first word
    is a mistyped command, refused with the closest command name."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            word = args[0]
            if word.startswith("-") or looks_like_model(word):
                args = ["build", *args]
            else:
                raise click.UsageError(self._unknown(word), ctx)
        return super().parse_args(ctx, args)

    def _unknown(self, word: str) -> str:
        close = difflib.get_close_matches(word, list(self.commands), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return (
            f"no such command '{word}'{hint} (commands: {', '.join(sorted(self.commands))}; "
            "to build, give an existing model file, an .onnx path or package.module:factory)"
        )


@click.group(cls=_DefaultBuild, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="compile-pkg")
def cli() -> None:
    """Compile one model into one deployment package for gpu, cpu and arm targets."""


def parse_targets(value: str | None) -> tuple[str, ...] | None:
    """The --targets list, checked by the one target table (compiler.core.targets)."""
    if value is None:
        return None
    try:
        return check_targets(value.split(","))
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _fail(exc: CompilePkgError) -> None:
    console.print(Text.assemble(("error: ", "bold red"), str(exc)))
    if ui.json:
        info = ErrorInfo(type=type(exc).__name__, message=str(exc), exit_code=exc.exit_code)
        emit_json(ErrorDoc(command=ui.command or "compile-pkg", error=info))
    sys.exit(exc.exit_code)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _terminate(signum: int, _frame: object) -> None:
    for sig in _STOP_SIGNALS:  # a second signal does not cut the cleanup short
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(signum)


def _stopped(exc: BaseException) -> None:
    """Ctrl-C (exit 130) or a stop signal (128 + its number), after the cleanup ran."""
    cause = exc if isinstance(exc, Terminated) else exc.__cause__
    if isinstance(cause, Terminated):
        console.print(f"stopped by {cause}: cleaned up, nothing half-written")
        sys.exit(128 + cause.signum)
    console.print("aborted")
    sys.exit(130)


_CHARTS_HOME = {"ours": False}  # main pointed MPLCONFIGDIR at a cache root (the user had not)


def charts_home(cache_dir: str | Path | None = None) -> None:
    """The report's charts: matplotlib keeps its font cache (and reads its rc file) under the
    build's cache folder (`cache_dir`; the default root for none or a URL), not in
    ~/.cache/matplotlib, unless the user set MPLCONFIGDIR: with the libraries' telemetry off
    (core/telemetry.py) a build writes its output and its cache folder only."""
    if "MPLCONFIGDIR" in os.environ and not _CHARTS_HOME["ours"]:
        return
    local = cache_dir is not None and "://" not in str(cache_dir)
    root = Path(cache_dir).absolute() if local else default_cache_root()  # type: ignore[arg-type]
    os.environ["MPLCONFIGDIR"] = str(root / "matplotlib")
    _CHARTS_HOME["ours"] = True


def main(argv: list[str] | None = None) -> None:
    ui.reset()
    charts_home()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _terminate) for sig in _STOP_SIGNALS}
    try:
        with process_scratch():  # what a SIGKILLed run left in the temporary folder goes next time
            cli.main(args=argv, prog_name="compile-pkg", standalone_mode=False)
    except CompilePkgError as exc:
        _fail(exc)
    except (click.exceptions.Abort, Terminated) as exc:
        _stopped(exc)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:  # the reader of stdout stopped early (`| head`): not our failure
        _silence_stdout()
        sys.exit(0)
    except Exception as exc:  # a bug of ours: one line by default, the traceback on request
        if os.environ.get("COMPILE_PKG_DEBUG"):
            raise
        console.print(
            f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
            "(set COMPILE_PKG_DEBUG=1 for the traceback, and please report it)",
            style="bold red",
        )
        sys.exit(70)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def trust_options() -> Callable[[_F], _F]:
    """`--trusted-key` (repeatable) and `--allow-unsigned-native`, for commands that run code."""

    def wrap(fn: _F) -> _F:
        fn = click.option(
            "--allow-unsigned-native",
            is_flag=True,
            help="run native code from an unsigned or untrusted package (you vouch for it)",
        )(fn)
        return click.option(
            "--trusted-key",
            "trusted_keys",
            multiple=True,
            type=click.Path(path_type=Path),
            help="a public key whose signature makes native code (TVM .so, engines) "
            "loadable; default $COMPILE_PKG_TRUSTED_KEYS",
        )(fn)

    return wrap


def trust_policy(keys: tuple[Path, ...], allow_unsigned_native: bool) -> TrustPolicy:
    """The trust policy the flags of `trust_options` ask for."""
    if keys:
        return TrustPolicy.from_files(keys, allow_unsigned_native=allow_unsigned_native)
    return TrustPolicy.from_env(allow_unsigned_native=allow_unsigned_native)
